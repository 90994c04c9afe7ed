// CPU test harness of the vrwkv TensorRT plugins: drives one plugin through its IPluginV3 interfaces in the order
// TensorRT's builder and runtime do, with the harness's own IExprBuilder, logger and resource context, and runs
// enqueue on the CPU: the plugin's kernel glue and csrc/kernels' CUDA source are compiled against cuda_on_cpu.h.
//
// What the harness expects of each node (input element classes, output shapes and types) is written here from the
// contract (vrwkv_edge/ops/custom_op_contract.py), independently of the plugin's own tables, so that a plugin that
// reports a wrong shape or type fails here.  tests/trt/harness.py calls vrwkv_trt_harness_run through ctypes and
// compares the outputs with the PyTorch references.
#include <NvInferRuntime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

namespace {

using nvinfer1::DataType;
using nvinfer1::DimensionOperation;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

constexpr int kNbDataTypes = 12;     // DataType::kFLOAT .. kE8M0 in TensorRT 10.14
constexpr int kNbFormats = 12;       // TensorFormat::kLINEAR .. kHWC16

struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void check(bool ok, const std::string& what) {
    if (!ok) throw Failure(what);
}

// ------------------------------------------------------------------ the harness's IExprBuilder (symbolic dims)

class Expr : public nvinfer1::IDimensionExpr {
  public:
    enum class Kind { kConstant, kSymbol, kOperation };

    Expr(Kind kind, int64_t value, char symbol, DimensionOperation op, const Expr* a, const Expr* b)
        : impl_(this), kind_(kind), value_(value), symbol_(symbol), op_(op), a_(a), b_(b) {
        mImpl = &impl_;
    }
    ~Expr() noexcept override = default;

    // The value under a binding of the symbols (B and T, the dynamic dimensions).
    int64_t eval(const std::map<char, int64_t>& env) const {
        if (kind_ == Kind::kConstant) return value_;
        if (kind_ == Kind::kSymbol) return env.at(symbol_);
        const int64_t x = a_->eval(env), y = b_->eval(env);
        switch (op_) {
            case DimensionOperation::kSUM: return x + y;
            case DimensionOperation::kPROD: return x * y;
            case DimensionOperation::kMAX: return std::max(x, y);
            case DimensionOperation::kMIN: return std::min(x, y);
            case DimensionOperation::kSUB: return x - y;
            case DimensionOperation::kEQUAL: return x == y;
            case DimensionOperation::kLESS: return x < y;
            case DimensionOperation::kFLOOR_DIV: return (x / y) - ((x % y != 0) && ((x < 0) != (y < 0)));
            case DimensionOperation::kCEIL_DIV: return (x + y - 1) / y;
        }
        throw Failure("unknown DimensionOperation");
    }
    bool constant() const { return kind_ == Kind::kConstant || (kind_ == Kind::kOperation && a_->constant() && b_->constant()); }

  private:
    struct Impl : nvinfer1::apiv::VDimensionExpr {
        explicit Impl(const Expr* e) : e_(e) {}
        bool isConstant() const override { return e_->constant(); }
        int64_t getConstantValue() const override { return e_->constant() ? e_->eval({}) : -1; }
        bool isSizeTensor() const override { return false; }
        const Expr* e_;
    } impl_;
    Kind kind_;
    int64_t value_;
    char symbol_;
    DimensionOperation op_;
    const Expr *a_, *b_;
};

class ExprBuilder : public nvinfer1::IExprBuilder {
  public:
    ExprBuilder() : impl_(this) { mImpl = &impl_; }
    ~ExprBuilder() noexcept override = default;

    const Expr* make_constant(int64_t v) { return add(Expr::Kind::kConstant, v, 0, DimensionOperation::kSUM, nullptr, nullptr); }
    const Expr* make_symbol(char s) { return add(Expr::Kind::kSymbol, 0, s, DimensionOperation::kSUM, nullptr, nullptr); }
    static const Expr& as_expr(const nvinfer1::IDimensionExpr& e) {
        const Expr* x = dynamic_cast<const Expr*>(&e);
        check(x != nullptr, "getOutputShapes used a dimension expression the harness did not create");
        return *x;
    }

  private:
    const Expr* add(Expr::Kind k, int64_t v, char s, DimensionOperation op, const Expr* a, const Expr* b) {
        exprs_.push_back(std::make_unique<Expr>(k, v, s, op, a, b));
        return exprs_.back().get();
    }
    struct Impl : nvinfer1::apiv::VExprBuilder {
        explicit Impl(ExprBuilder* b) : b_(b) {}
        const nvinfer1::IDimensionExpr* constant(int64_t value) override { return b_->make_constant(value); }
        const nvinfer1::IDimensionExpr* operation(DimensionOperation op, const nvinfer1::IDimensionExpr& first,
                                                  const nvinfer1::IDimensionExpr& second) override {
            return b_->add(Expr::Kind::kOperation, 0, 0, op, &as_expr(first), &as_expr(second));
        }
        const nvinfer1::IDimensionExpr* declareSizeTensor(int32_t, const nvinfer1::IDimensionExpr&,
                                                          const nvinfer1::IDimensionExpr&) override {
            return nullptr;   // no vrwkv node has data-dependent output shapes
        }
        ExprBuilder* b_;
    } impl_;
    std::deque<std::unique_ptr<Expr>> exprs_;
};

// ------------------------------------------------------------------ logger and resource context

class Logger : public nvinfer1::ILogger {
  public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) messages += std::string(msg) + "\n";
    }
    std::string messages;
};

class LoggerFinder : public nvinfer1::ILoggerFinder {
  public:
    nvinfer1::ILogger* findLogger() override { return &logger; }
    Logger logger;
};

class ResourceContext : public nvinfer1::IPluginResourceContext {
  public:
    nvinfer1::IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

// ------------------------------------------------------------------ the contract, as the harness reads it

// Each tensor: 'E' (activation element type), 'F' (float32); dims as symbols of B, T, H, N, C.
struct TensorSpec {
    char cls;
    const char* dims;
};
struct NodeSpec {
    std::vector<TensorSpec> in, out;
    std::vector<std::string> fields;
};

NodeSpec node_spec(const std::string& op) {
    const TensorSpec tok{'E', "BTHN"}, bonus{'E', "HN"}, state{'F', "BHNN"}, y{'F', "BTHN"};
    if (op == "WKV6") return {{tok, tok, tok, tok, bonus, state}, {y, state}, {}};
    if (op == "WKV7") return {{tok, tok, tok, tok, tok, tok, state}, {y, state}, {}};
    if (op == "BiWKV") return {{{'F', "C"}, {'F', "C"}, {'E', "BTC"}, {'E', "BTC"}}, {{'F', "BTC"}}, {"semantics"}};
    if (op == "BiWKV6") return {{tok, tok, tok, tok, bonus}, {y}, {}};
    throw Failure("unknown op '" + op + "'");
}

Dims concrete_dims(const char* sym, const std::map<char, int64_t>& v) {
    Dims d{};
    d.nbDims = int32_t(std::strlen(sym));
    for (int i = 0; i < d.nbDims; ++i) d.d[i] = v.at(sym[i]);
    return d;
}

std::string dims_str(const Dims& d) {
    std::string s = "[";
    for (int i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + "]";
}

// ------------------------------------------------------------------ field (de)serialisation, as an engine does

std::vector<char> serialize_fields(const nvinfer1::PluginFieldCollection* fc) {
    std::vector<char> out;
    auto put = [&](const void* p, size_t n) { out.insert(out.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n); };
    const int32_t n = fc ? fc->nbFields : 0;
    put(&n, 4);
    for (int32_t i = 0; i < n; ++i) {
        const nvinfer1::PluginField& f = fc->fields[i];
        check(f.name != nullptr, "getFieldsToSerialize: a field without a name");
        check(f.type == nvinfer1::PluginFieldType::kCHAR, std::string("getFieldsToSerialize: field '") + f.name +
                                                              "' has a type the harness does not serialise");
        const int32_t len = int32_t(std::strlen(f.name)), type = int32_t(f.type);
        put(&len, 4), put(f.name, size_t(len)), put(&type, 4), put(&f.length, 4), put(f.data, size_t(f.length));
    }
    return out;
}

struct Deserialized {
    std::vector<std::string> names;
    std::vector<std::vector<char>> data;
    std::vector<nvinfer1::PluginField> fields;
    nvinfer1::PluginFieldCollection fc{};
};

std::unique_ptr<Deserialized> deserialize_fields(const std::vector<char>& blob) {
    auto d = std::make_unique<Deserialized>();
    size_t at = 0;
    auto get = [&](void* p, size_t n) {
        check(at + n <= blob.size(), "serialised fields truncated");
        std::memcpy(p, blob.data() + at, n);
        at += n;
    };
    int32_t n = 0;
    get(&n, 4);
    d->names.resize(size_t(n)), d->data.resize(size_t(n));
    for (int32_t i = 0; i < n; ++i) {
        int32_t len = 0, type = 0, length = 0;
        get(&len, 4);
        d->names[size_t(i)].resize(size_t(len));
        get(d->names[size_t(i)].data(), size_t(len));
        get(&type, 4), get(&length, 4);
        d->data[size_t(i)].resize(size_t(length));
        get(d->data[size_t(i)].data(), size_t(length));
        d->fields.emplace_back(d->names[size_t(i)].c_str(), d->data[size_t(i)].data(),
                               nvinfer1::PluginFieldType(type), length);
    }
    d->fc.nbFields = n;
    d->fc.fields = d->fields.data();
    return d;
}

struct PluginDeleter {
    void operator()(nvinfer1::IPluginV3* p) const { delete p; }
};
using PluginPtr = std::unique_ptr<nvinfer1::IPluginV3, PluginDeleter>;

template <class I>
I* capability(nvinfer1::IPluginV3* p, nvinfer1::PluginCapabilityType t, const char* what) {
    auto* c = p->getCapabilityInterface(t);
    check(c != nullptr, std::string("getCapabilityInterface(") + what + ") returned null");
    auto* i = dynamic_cast<I*>(c);
    check(i != nullptr, std::string("getCapabilityInterface(") + what + ") is not the expected interface");
    return i;
}

nvinfer1::IPluginCreatorV3One* find_creator(const std::string& op) {
    int32_t n = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(n);
    check(creators != nullptr && n > 0, "getCreators returned no creators");
    nvinfer1::IPluginCreatorV3One* found = nullptr;
    for (int32_t i = 0; i < n; ++i) {
        check(std::string(creators[i]->getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE",
              "getCreators: creator " + std::to_string(i) + " is not an IPluginCreatorV3One");
        auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
        for (int32_t j = 0; j < i; ++j) {
            auto* o = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[j]);
            check(std::string(o->getPluginName()) != c->getPluginName() ||
                      std::string(o->getPluginNamespace()) != c->getPluginNamespace(),
                  std::string("getCreators: two creators named ") + c->getPluginName());
        }
        if (op == c->getPluginName()) found = c;
    }
    check(found != nullptr, "getCreators: no creator named '" + op + "'");
    check(std::string(found->getPluginNamespace()) == "vrwkv", "creator namespace is not 'vrwkv'");
    check(std::string(found->getPluginVersion()) == "1", "creator version is not '1' (OP_VERSION)");
    return found;
}

// supportsFormatCombination for every (type, format) at every position, the earlier positions fixed at the
// expected combination for activation type E, as TensorRT's format search asks.
void check_formats(nvinfer1::IPluginV3OneBuild* build, const NodeSpec& s, DataType E) {
    const int nin = int(s.in.size()), nout = int(s.out.size()), n = nin + nout;
    std::vector<DynamicPluginTensorDesc> io(static_cast<size_t>(n));
    auto expected_type = [&](int pos) {
        const TensorSpec& t = pos < nin ? s.in[size_t(pos)] : s.out[size_t(pos - nin)];
        return t.cls == 'E' ? E : DataType::kFLOAT;
    };
    int first_e = -1;
    for (int i = 0; i < nin && first_e < 0; ++i)
        if (s.in[size_t(i)].cls == 'E') first_e = i;
    for (int i = 0; i < n; ++i) io[size_t(i)].desc.type = expected_type(i), io[size_t(i)].desc.format = TensorFormat::kLINEAR;
    for (int pos = 0; pos < n; ++pos) {
        for (int t = 0; t < kNbDataTypes; ++t) {
            for (int f = 0; f < kNbFormats; ++f) {
                io[size_t(pos)].desc.type = DataType(t), io[size_t(pos)].desc.format = TensorFormat(f);
                const bool got = build->supportsFormatCombination(pos, io.data(), nin, nout);
                bool want = f == int(TensorFormat::kLINEAR) && DataType(t) == expected_type(pos);
                if (pos == first_e)   // the first activation input chooses E among fp32 / fp16 / bf16
                    want = f == int(TensorFormat::kLINEAR) &&
                           (DataType(t) == DataType::kFLOAT || DataType(t) == DataType::kHALF ||
                            DataType(t) == DataType::kBF16);
                check(got == want, "supportsFormatCombination(pos " + std::to_string(pos) + ", type " +
                                       std::to_string(t) + ", format " + std::to_string(f) + ") = " +
                                       (got ? "true" : "false") + " with E = " + std::to_string(int(E)));
            }
        }
        io[size_t(pos)].desc.type = expected_type(pos), io[size_t(pos)].desc.format = TensorFormat::kLINEAR;
    }
}

int run(const std::string& op, const char* semantics, int dtype_code, const int64_t* dims, int n_dims,
        const void* const* inputs, float* const* outputs) {
    const NodeSpec s = node_spec(op);
    const DataType E = dtype_code == 1 ? DataType::kHALF : dtype_code == 2 ? DataType::kBF16 : DataType::kFLOAT;
    std::map<char, int64_t> v;
    if (op == "BiWKV") {
        check(n_dims == 3, "BiWKV takes dims (B, T, C)");
        v = {{'B', dims[0]}, {'T', dims[1]}, {'C', dims[2]}};
    } else {
        check(n_dims == 4, op + " takes dims (B, T, H, N)");
        v = {{'B', dims[0]}, {'T', dims[1]}, {'H', dims[2]}, {'N', dims[3]}};
    }
    const int nin = int(s.in.size()), nout = int(s.out.size());

    // 1. creator and fields, as the ONNX parser makes them (strings with their NUL)
    nvinfer1::IPluginCreatorV3One* creator = find_creator(op);
    const nvinfer1::PluginFieldCollection* names = creator->getFieldNames();
    check(names != nullptr && names->nbFields == int32_t(s.fields.size()), "getFieldNames: wrong number of fields");
    for (int i = 0; i < names->nbFields; ++i)
        check(s.fields[size_t(i)] == names->fields[i].name, "getFieldNames: unexpected field " + std::string(names->fields[i].name));
    std::vector<nvinfer1::PluginField> fields;
    std::string sem = semantics ? semantics : "";
    if (semantics) fields.emplace_back("semantics", sem.c_str(), nvinfer1::PluginFieldType::kCHAR, int32_t(sem.size() + 1));
    nvinfer1::PluginFieldCollection fc{int32_t(fields.size()), fields.data()};
    PluginPtr plugin(creator->createPlugin("harness_node", &fc, nvinfer1::TensorRTPhase::kBUILD));
    check(plugin != nullptr, "createPlugin(kBUILD) returned null");
    check(std::string(plugin->getInterfaceInfo().kind) == "PLUGIN", "not an IPluginV3");

    auto* core = capability<nvinfer1::IPluginV3OneCore>(plugin.get(), nvinfer1::PluginCapabilityType::kCORE, "kCORE");
    auto* build = capability<nvinfer1::IPluginV3OneBuild>(plugin.get(), nvinfer1::PluginCapabilityType::kBUILD, "kBUILD");
    capability<nvinfer1::IPluginV3OneRuntime>(plugin.get(), nvinfer1::PluginCapabilityType::kRUNTIME, "kRUNTIME");
    check(op == core->getPluginName() && std::string(core->getPluginNamespace()) == "vrwkv" &&
              std::string(core->getPluginVersion()) == "1",
          "IPluginV3OneCore name / namespace / version differ from the creator's");

    // 2. output count, types and shapes
    check(build->getNbOutputs() == nout, "getNbOutputs = " + std::to_string(build->getNbOutputs()) +
                                             ", the contract has " + std::to_string(nout));
    std::vector<DataType> in_types, out_types(size_t(nout), DataType::kINT64);
    for (const TensorSpec& t : s.in) in_types.push_back(t.cls == 'E' ? E : DataType::kFLOAT);
    check(build->getOutputDataTypes(out_types.data(), nout, in_types.data(), nin) == 0, "getOutputDataTypes failed");
    for (int i = 0; i < nout; ++i)
        check(out_types[size_t(i)] == DataType::kFLOAT,
              "getOutputDataTypes: output " + std::to_string(i) + " has type " + std::to_string(int(out_types[size_t(i)])) +
                  ", the contract says float32 (" + std::to_string(int(DataType::kFLOAT)) + ")");

    ExprBuilder eb;
    std::vector<DimsExprs> in_exprs(static_cast<size_t>(nin)), out_exprs(static_cast<size_t>(nout));
    for (int i = 0; i < nin; ++i) {   // B and T dynamic (symbols), H, N, C static (constants), as in an export
        const char* sym = s.in[size_t(i)].dims;
        in_exprs[size_t(i)].nbDims = int32_t(std::strlen(sym));
        for (int d = 0; sym[d]; ++d)
            in_exprs[size_t(i)].d[d] = (sym[d] == 'B' || sym[d] == 'T') ? eb.make_symbol(sym[d]) : eb.make_constant(v.at(sym[d]));
    }
    check(build->getOutputShapes(in_exprs.data(), nin, nullptr, 0, out_exprs.data(), nout, eb) == 0, "getOutputShapes failed");
    for (int i = 0; i < nout; ++i) {
        const Dims want = concrete_dims(s.out[size_t(i)].dims, v);
        Dims got{};
        got.nbDims = out_exprs[size_t(i)].nbDims;
        check(got.nbDims == want.nbDims, "getOutputShapes: output " + std::to_string(i) + " has rank " +
                                             std::to_string(got.nbDims) + ", expected " + std::to_string(want.nbDims));
        for (int d = 0; d < got.nbDims; ++d) got.d[d] = ExprBuilder::as_expr(*out_exprs[size_t(i)].d[d]).eval(v);
        check(std::equal(got.d, got.d + got.nbDims, want.d),
              "getOutputShapes: output " + std::to_string(i) + " is " + dims_str(got) + ", expected " + dims_str(want));
    }

    // 3. formats, for every activation type (the plugin must not depend on which one this run uses)
    for (DataType e : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16}) check_formats(build, s, e);

    // 4. configurePlugin and the workspace, B and T dynamic in [1, value]
    std::vector<DynamicPluginTensorDesc> din(static_cast<size_t>(nin)), dout(static_cast<size_t>(nout));
    auto describe = [&](DynamicPluginTensorDesc& d, const TensorSpec& t, DataType type) {
        d.desc.dims = d.max = d.opt = concrete_dims(t.dims, v);
        d.min = d.max;
        for (int k = 0; t.dims[k]; ++k)
            if (t.dims[k] == 'B' || t.dims[k] == 'T') d.desc.dims.d[k] = -1, d.min.d[k] = 1;
        d.desc.type = type, d.desc.format = TensorFormat::kLINEAR, d.desc.scale = 1.f;
    };
    for (int i = 0; i < nin; ++i) describe(din[size_t(i)], s.in[size_t(i)], in_types[size_t(i)]);
    for (int i = 0; i < nout; ++i) describe(dout[size_t(i)], s.out[size_t(i)], DataType::kFLOAT);
    check(build->configurePlugin(din.data(), nin, dout.data(), nout) == 0, "configurePlugin failed");
    const size_t ws_bytes = build->getWorkspaceSize(din.data(), nin, dout.data(), nout);

    // 5. serialisation round trip, then a runtime-phase plugin from the fields, cloned, attached to a context
    const std::vector<char> blob = serialize_fields(capability<nvinfer1::IPluginV3OneRuntime>(
        plugin.get(), nvinfer1::PluginCapabilityType::kRUNTIME, "kRUNTIME")->getFieldsToSerialize());
    std::unique_ptr<Deserialized> restored = deserialize_fields(blob);
    PluginPtr runtime_plugin(creator->createPlugin("harness_node", &restored->fc, nvinfer1::TensorRTPhase::kRUNTIME));
    check(runtime_plugin != nullptr, "createPlugin(kRUNTIME) from the serialised fields returned null");
    auto* rt0 = capability<nvinfer1::IPluginV3OneRuntime>(runtime_plugin.get(), nvinfer1::PluginCapabilityType::kRUNTIME, "kRUNTIME");
    check(serialize_fields(rt0->getFieldsToSerialize()) == blob, "fields differ after a serialisation round trip");
    PluginPtr cloned(runtime_plugin->clone());
    check(cloned != nullptr, "clone returned null");
    runtime_plugin.reset();   // the clone must not depend on the original
    plugin.reset();
    ResourceContext ctx;
    auto* rt1 = capability<nvinfer1::IPluginV3OneRuntime>(cloned.get(), nvinfer1::PluginCapabilityType::kRUNTIME, "kRUNTIME");
    PluginPtr attached(rt1->attachToContext(&ctx));
    check(attached != nullptr, "attachToContext returned null");
    cloned.reset();
    auto* rt = capability<nvinfer1::IPluginV3OneRuntime>(attached.get(), nvinfer1::PluginCapabilityType::kRUNTIME, "kRUNTIME");

    // 6. onShapeChange and enqueue with the concrete shapes; the stream is the emulator's (none)
    std::vector<PluginTensorDesc> pin(static_cast<size_t>(nin)), pout(static_cast<size_t>(nout));
    for (int i = 0; i < nin; ++i) pin[size_t(i)] = din[size_t(i)].desc, pin[size_t(i)].dims = din[size_t(i)].max;
    for (int i = 0; i < nout; ++i) pout[size_t(i)] = dout[size_t(i)].desc, pout[size_t(i)].dims = dout[size_t(i)].max;
    check(rt->onShapeChange(pin.data(), nin, pout.data(), nout) == 0, "onShapeChange failed");
    std::vector<double> workspace((ws_bytes + sizeof(double) - 1) / sizeof(double) + 1);
    std::vector<void*> outs(outputs, outputs + nout);
    check(rt->enqueue(pin.data(), pout.data(), inputs, outs.data(), ws_bytes ? workspace.data() : nullptr, nullptr) == 0,
          "enqueue failed");
    return 0;
}

}  // namespace

extern "C" {

// Runs node `op` (fields: `semantics` for BiWKV, or null) with activation dtype 0 fp32 / 1 fp16 / 2 bf16 on dims
// (B, T, H, N) or (B, T, C), inputs in the contract's order, outputs float32 in the contract's order.  Returns 0, or
// 1 with the failed check and the plugin's logged errors in `log`.
__attribute__((visibility("default"))) int vrwkv_trt_harness_run(const char* op, const char* semantics, int dtype,
                                                                 const int64_t* dims, int n_dims,
                                                                 const void* const* inputs, float* const* outputs,
                                                                 char* log, int log_len) {
    static LoggerFinder finder;
    finder.logger.messages.clear();
    setLoggerFinder(&finder);
    std::string message;
    try {
        run(op, semantics, dtype, dims, n_dims, inputs, outputs);
    } catch (const std::exception& e) {
        message = e.what();
    }
    if (!finder.logger.messages.empty()) message += (message.empty() ? "" : "\n") + finder.logger.messages;
    if (log && log_len > 0) {
        std::strncpy(log, message.c_str(), size_t(log_len - 1));
        log[log_len - 1] = '\0';
    }
    return message.empty() ? 0 : 1;
}

// Calls configurePlugin with inconsistent dims (the state's head size differs from the tokens') and returns whether
// the plugin refused it (1) with a logged error (written to `log`).
__attribute__((visibility("default"))) int vrwkv_trt_harness_refuses_bad_dims(char* log, int log_len) {
    static LoggerFinder finder;
    finder.logger.messages.clear();
    setLoggerFinder(&finder);
    nvinfer1::IPluginCreatorV3One* creator = find_creator("WKV6");
    PluginPtr plugin(creator->createPlugin("bad", nullptr, nvinfer1::TensorRTPhase::kBUILD));
    auto* build = capability<nvinfer1::IPluginV3OneBuild>(plugin.get(), nvinfer1::PluginCapabilityType::kBUILD, "kBUILD");
    std::vector<DynamicPluginTensorDesc> in(6), out(2);
    const Dims tok{4, {1, 3, 2, 8}}, u{2, {2, 8}}, state{4, {1, 2, 16, 16}};
    for (int i = 0; i < 6; ++i) in[size_t(i)].desc.dims = i < 4 ? tok : i == 4 ? u : state;
    const bool refused = build->configurePlugin(in.data(), 6, out.data(), 2) != 0;
    std::strncpy(log, finder.logger.messages.c_str(), size_t(log_len - 1));
    log[log_len - 1] = '\0';
    return refused && !finder.logger.messages.empty();
}

}  // extern "C"
