// The vrwkv TensorRT plugins (see wkv_plugin.h): the IO table of each node type, the IPluginV3 interfaces over it,
// and the exported getCreators / setLoggerFinder.  No CUDA runtime call is made here: every launch goes through
// wkv_plugin_kernels (nvcc on a GPU, cuda_on_cpu in the CPU harness), so this file is plain C++.
#include "wkv_plugin.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <stdexcept>

#include "wkv_plugin_kernels.h"

namespace vrwkv::trt {
namespace {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;

// ---------------------------------------------------------------------------------------------- the IO tables

// What an input is: its element type class and its dims, as symbols shared between the inputs of one node.
enum class Role {
    kToken,     // E  [B, T, H, N]
    kBonus,     // E  [H, N]       (u of RWKV-6)
    kState,     // fp32 [B, H, N, N]
    kChannel,   // fp32 [C]        (w, u of Bi-WKV v1, already divided by T)
    kChannelToken,  // E [B, T, C]
};

struct RoleShape {
    bool activation;    // element type E (fp32 / fp16 / bf16, one for the node) rather than fp32
    const char* dims;   // one symbol per dimension
};

RoleShape role_shape(Role r) {
    switch (r) {
        case Role::kToken: return {true, "BTHN"};
        case Role::kBonus: return {true, "HN"};
        case Role::kState: return {false, "BHNN"};
        case Role::kChannel: return {false, "C"};
        case Role::kChannelToken: return {true, "BTC"};
    }
    return {false, ""};
}

struct OpSpec {
    const char* name;
    std::vector<const char*> inputs;      // names, as in the contract (for messages)
    std::vector<Role> roles;
    std::vector<const char*> outputs;
    std::vector<int> output_shape_from;   // the input whose dims each output has
    int first_activation;                 // the input that fixes E
};

const OpSpec& spec(Op op) {
    static const OpSpec kOps[] = {
        {"WKV6", {"r", "k", "v", "w_log", "u", "state_in"},
         {Role::kToken, Role::kToken, Role::kToken, Role::kToken, Role::kBonus, Role::kState},
         {"y", "state_out"}, {0, 5}, 0},
        {"WKV7", {"r", "w_log", "k", "v", "a", "b", "state_in"},
         {Role::kToken, Role::kToken, Role::kToken, Role::kToken, Role::kToken, Role::kToken, Role::kState},
         {"y", "state_out"}, {0, 6}, 0},
        {"BiWKV", {"w", "u", "k", "v"}, {Role::kChannel, Role::kChannel, Role::kChannelToken, Role::kChannelToken},
         {"y"}, {2}, 2},
        {"BiWKV6", {"r", "k", "v", "w_log", "u"},
         {Role::kToken, Role::kToken, Role::kToken, Role::kToken, Role::kBonus}, {"y"}, {0}, 0},
    };
    return kOps[static_cast<int>(op)];
}

bool is_activation_type(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

DType kernel_dtype(DataType t) {
    return t == DataType::kHALF ? DType::kF16 : t == DataType::kBF16 ? DType::kBF16 : DType::kF32;
}

const char* semantics_name(BiWkvSemantics s) { return s == BiWkvSemantics::kFormula ? "formula" : "official"; }

// ------------------------------------------------------------------------------------------------ logging

nvinfer1::ILoggerFinder* g_logger_finder = nullptr;

void report(const std::string& message) {
    nvinfer1::ILogger* logger = g_logger_finder ? g_logger_finder->findLogger() : nullptr;
    if (logger) logger->log(nvinfer1::ILogger::Severity::kERROR, message.c_str());
    else std::fprintf(stderr, "%s\n", message.c_str());
}

std::string dims_string(const Dims& d) {
    std::string s = "[";
    for (int i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + "]";
}

bool supported_head_size(int64_t n) { return n == 8 || n == 16 || n == 32 || n == 64 || n == 128; }

}  // namespace

// ------------------------------------------------------------------------------------------------ the plugin

WkvPlugin::WkvPlugin(Op op, BiWkvSemantics semantics) : op_(op), semantics_(semantics) {}

nvinfer1::IPluginCapability* WkvPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
    switch (type) {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* WkvPlugin::clone() noexcept {
    try {
        return new WkvPlugin(op_, semantics_);
    } catch (const std::exception& e) {
        report(std::string("vrwkv::") + spec(op_).name + " clone: " + e.what());
        return nullptr;
    }
}

char const* WkvPlugin::getPluginName() const noexcept { return spec(op_).name; }

char const* WkvPlugin::getPluginVersion() const noexcept {
    static const std::string version = std::to_string(kOpVersion);
    return version.c_str();
}

char const* WkvPlugin::getPluginNamespace() const noexcept { return kPluginNamespace; }

int32_t WkvPlugin::getNbOutputs() const noexcept { return int32_t(spec(op_).outputs.size()); }

std::string WkvPlugin::checkDims(Dims const* dims, int32_t nbInputs) const {
    const OpSpec& s = spec(op_);
    if (nbInputs != int32_t(s.inputs.size()))
        return std::to_string(nbInputs) + " inputs, the node has " + std::to_string(s.inputs.size());
    std::map<char, int64_t> value;       // symbol -> size, from the first input that fixes it
    std::map<char, std::string> origin;  // symbol -> the input that fixed it (for the message)
    for (int32_t i = 0; i < nbInputs; ++i) {
        const char* sym = role_shape(s.roles[i]).dims;
        const int rank = int(std::strlen(sym));
        if (dims[i].nbDims != rank)
            return std::string("input '") + s.inputs[i] + "' has rank " + std::to_string(dims[i].nbDims) +
                   ", expected " + std::to_string(rank) + " (" + sym + ")";
        for (int d = 0; d < rank; ++d) {
            const int64_t n = dims[i].d[d];
            if (n < 0) continue;                         // dynamic at build time
            auto it = value.find(sym[d]);
            if (it == value.end()) {
                value[sym[d]] = n;
                origin[sym[d]] = s.inputs[i];
            } else if (it->second != n) {
                return std::string("input '") + s.inputs[i] + "' " + dims_string(dims[i]) + ": dimension " +
                       sym[d] + " = " + std::to_string(n) + " but '" + origin[sym[d]] + "' has " +
                       std::to_string(it->second);
            }
        }
    }
    auto n = value.find('N');
    if (n != value.end() && !supported_head_size(n->second))
        return "head size N = " + std::to_string(n->second) + " is not supported (8, 16, 32, 64 or 128)";
    return {};
}

int32_t WkvPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                   nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    try {
        std::vector<Dims> dims;
        for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(in[i].desc.dims);
        std::string why = checkDims(dims.data(), nbInputs);
        if (why.empty() && nbOutputs != getNbOutputs())
            why = std::to_string(nbOutputs) + " outputs, the node has " + std::to_string(getNbOutputs());
        if (!why.empty()) {
            report(std::string("vrwkv::") + spec(op_).name + " configurePlugin: " + why);
            return -1;
        }
        return 0;
    } catch (const std::exception& e) {
        report(std::string("vrwkv::") + spec(op_).name + " configurePlugin: " + e.what());
        return -1;
    }
}

int32_t WkvPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                      int32_t nbInputs) const noexcept {
    const OpSpec& s = spec(op_);
    if (nbOutputs != getNbOutputs() || nbInputs != int32_t(s.inputs.size())) return -1;
    for (int32_t i = 0; i < nbOutputs; ++i) {
#ifdef VRWKV_TRT_TEST_BREAK_OUTPUT_DTYPE
        // Deliberately wrong (tests/trt shows the harness catches it): outputs in the activation type.
        outputTypes[i] = inputTypes[s.first_activation];
#else
        outputTypes[i] = DataType::kFLOAT;   // every output is fp32: the kernels accumulate in fp32 (the contract)
#endif
    }
    (void)inputTypes;
    return 0;
}

int32_t WkvPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                   nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                   nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                   nvinfer1::IExprBuilder& exprBuilder) noexcept {
    const OpSpec& s = spec(op_);
    if (nbOutputs != getNbOutputs() || nbInputs != int32_t(s.inputs.size())) {
        report(std::string("vrwkv::") + s.name + " getOutputShapes: " + std::to_string(nbInputs) + " inputs / " +
               std::to_string(nbOutputs) + " outputs, expected " + std::to_string(s.inputs.size()) + " / " +
               std::to_string(getNbOutputs()));
        return -1;
    }
    for (int32_t i = 0; i < nbOutputs; ++i) {
        const int from = s.output_shape_from[i];
        const int rank = int(std::strlen(role_shape(s.roles[from]).dims));
        if (inputs[from].nbDims != rank) {
            report(std::string("vrwkv::") + s.name + " getOutputShapes: input '" + s.inputs[from] + "' has rank " +
                   std::to_string(inputs[from].nbDims) + ", expected " + std::to_string(rank));
            return -1;
        }
        outputs[i] = inputs[from];   // y has the token inputs' shape, state_out the state_in's
    }
#ifdef VRWKV_TRT_TEST_BREAK_OUTPUT_SHAPE
    // Deliberately wrong (tests/trt shows the harness catches it): y one token longer than the input.
    outputs[0].d[1] = exprBuilder.operation(nvinfer1::DimensionOperation::kSUM, *outputs[0].d[1],
                                            *exprBuilder.constant(1));
#else
    (void)exprBuilder;
#endif
    return 0;
}

bool WkvPlugin::supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                          int32_t nbInputs, int32_t nbOutputs) noexcept {
    const OpSpec& s = spec(op_);
    if (nbInputs != int32_t(s.inputs.size()) || nbOutputs != getNbOutputs() || pos < 0 || pos >= nbInputs + nbOutputs)
        return false;
    const nvinfer1::PluginTensorDesc& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;   // the kernels index row-major contiguous tensors
    if (pos >= nbInputs) return d.type == DataType::kFLOAT;
    if (!role_shape(s.roles[pos]).activation) return d.type == DataType::kFLOAT;
    // TensorRT asks position by position with the earlier ones already fixed: the first activation picks E, the
    // others must match it (the kernels take one element type per node).
    if (pos == s.first_activation) return is_activation_type(d.type);
    return d.type == inOut[s.first_activation].desc.type;
}

size_t WkvPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                   nvinfer1::DynamicPluginTensorDesc const* /*outputs*/,
                                   int32_t /*nbOutputs*/) const noexcept {
    if (nbInputs != int32_t(spec(op_).inputs.size())) return 0;
    // Sized for the profile's largest shapes; the recurrences need none.
    const Dims& x = inputs[spec(op_).first_activation].max;
    if (op_ == Op::kBiWkv) {
        BiWkvParams p;
        p.B = int32_t(x.d[0]), p.T = int32_t(x.d[1]), p.C = int32_t(x.d[2]);
        return biwkv_workspace_bytes(p, semantics_ == BiWkvSemantics::kOfficial);
    }
    if (op_ == Op::kBiWkv6) {
        WkvCommonParams p;
        p.B = int32_t(x.d[0]), p.T = int32_t(x.d[1]), p.H = int32_t(x.d[2]), p.N = int32_t(x.d[3]);
        return biwkv6_workspace_bytes(p);
    }
    return 0;
}

int32_t WkvPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                                 nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    try {
        std::vector<Dims> dims;
        for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(in[i].dims);
        std::string why = checkDims(dims.data(), nbInputs);
        if (why.empty() && nbOutputs != getNbOutputs()) why = "wrong number of outputs";
        if (!why.empty()) {
            report(std::string("vrwkv::") + spec(op_).name + " onShapeChange: " + why);
            return -1;
        }
        return 0;
    } catch (const std::exception& e) {
        report(std::string("vrwkv::") + spec(op_).name + " onShapeChange: " + e.what());
        return -1;
    }
}

int32_t WkvPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*out*/,
                           void const* const* inputs, void* const* outputs, void* workspace,
                           cudaStream_t stream) noexcept {
    try {
        const OpSpec& s = spec(op_);
        const Dims& x = inputDesc[s.first_activation].dims;
        const DType dtype = kernel_dtype(inputDesc[s.first_activation].type);
        void* st = static_cast<void*>(stream);
        if (op_ == Op::kBiWkv) {
            BiWkvParams p;
            p.B = int32_t(x.d[0]), p.T = int32_t(x.d[1]), p.C = int32_t(x.d[2]);
            p.dtype = dtype;
            p.stride_t = p.C, p.stride_b = int64_t(p.T) * p.C;
            p.w = static_cast<const float*>(inputs[0]), p.u = static_cast<const float*>(inputs[1]);
            p.k = inputs[2], p.v = inputs[3];
            p.y = static_cast<float*>(outputs[0]);
            launch_biwkv(p, semantics_ == BiWkvSemantics::kOfficial, workspace, st);
            return 0;
        }
        auto fill = [&](WkvCommonParams& p) {
            p.B = int32_t(x.d[0]), p.T = int32_t(x.d[1]), p.H = int32_t(x.d[2]), p.N = int32_t(x.d[3]);
            p.dtype = dtype;
            p.stride_h = p.N, p.stride_t = int64_t(p.H) * p.N, p.stride_b = int64_t(p.T) * p.H * p.N;
            p.y = static_cast<float*>(outputs[0]);
        };
        if (op_ == Op::kWkv7) {
            Wkv7Params p;
            fill(p);
            p.r = inputs[0], p.w_log = inputs[1], p.k = inputs[2], p.v = inputs[3], p.a = inputs[4], p.b = inputs[5];
            // Not aliased: the kernel reads state_in and writes state_out (separate TensorRT tensors) in one pass.
            p.state_in = static_cast<const float*>(inputs[6]);
            p.state_out = static_cast<float*>(outputs[1]);
            launch_wkv7(p, st);
            return 0;
        }
        Wkv6Params p;
        fill(p);
        p.r = inputs[0], p.k = inputs[1], p.v = inputs[2], p.w_log = inputs[3], p.u = inputs[4];
        if (op_ == Op::kBiWkv6) {
            launch_biwkv6(p, workspace, st);
            return 0;
        }
        p.state_in = static_cast<const float*>(inputs[5]);
        p.state_out = static_cast<float*>(outputs[1]);
        launch_wkv6(p, st);
        return 0;
    } catch (const std::exception& e) {
        report(std::string("vrwkv::") + spec(op_).name + " enqueue: " + e.what());
        return -1;
    }
}

nvinfer1::IPluginV3* WkvPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
    return clone();   // no per-context resources: the kernels need only the stream and the workspace
}

nvinfer1::PluginFieldCollection const* WkvPlugin::getFieldsToSerialize() noexcept {
    fields_.clear();
    if (op_ == Op::kBiWkv) {
        semantics_field_ = semantics_name(semantics_);
        fields_.emplace_back("semantics", semantics_field_.c_str(), PluginFieldType::kCHAR,
                             int32_t(semantics_field_.size() + 1));
    }
    field_collection_.nbFields = int32_t(fields_.size());
    field_collection_.fields = fields_.data();
    return &field_collection_;
}

// ------------------------------------------------------------------------------------------------ the creators

WkvPluginCreator::WkvPluginCreator(Op op) : op_(op) {
    if (op_ == Op::kBiWkv) field_names_.emplace_back("semantics", nullptr, PluginFieldType::kCHAR, 0);
    field_collection_.nbFields = int32_t(field_names_.size());
    field_collection_.fields = field_names_.data();
}

nvinfer1::IPluginV3* WkvPluginCreator::createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                                    nvinfer1::TensorRTPhase /*phase*/) noexcept {
    const std::string where = std::string("vrwkv::") + spec(op_).name + " '" + (name ? name : "") + "': ";
    try {
        BiWkvSemantics semantics = BiWkvSemantics::kOfficial;   // the contract's DEFAULT_BIWKV_SEMANTICS
        for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
            const PluginField& f = fc->fields[i];
            const std::string field = f.name ? f.name : "";
            // The ONNX parser's own lookup attributes arrive as fields too on some versions.
            if (field == "plugin_version" || field == "plugin_namespace") continue;
            if (op_ != Op::kBiWkv || field != "semantics") {
                report(where + "unknown attribute '" + field + "' (the vrwkv contract defines " +
                       (op_ == Op::kBiWkv ? "only 'semantics')" : "no attributes for this node)"));
                return nullptr;
            }
            if (f.type != PluginFieldType::kCHAR || !f.data || f.length < 0) {
                report(where + "attribute 'semantics' must be a string");
                return nullptr;
            }
            // The parser passes the string with its terminating NUL; a caller may pass just the characters.
            std::string value(static_cast<const char*>(f.data), size_t(f.length));
            value = value.substr(0, value.find('\0'));
            if (value == "official") semantics = BiWkvSemantics::kOfficial;
            else if (value == "formula") semantics = BiWkvSemantics::kFormula;
            else {
                report(where + "attribute 'semantics' = '" + value + "', expected 'official' or 'formula'");
                return nullptr;
            }
        }
        return new WkvPlugin(op_, semantics);
    } catch (const std::exception& e) {
        report(where + e.what());
        return nullptr;
    }
}

nvinfer1::PluginFieldCollection const* WkvPluginCreator::getFieldNames() noexcept { return &field_collection_; }

char const* WkvPluginCreator::getPluginName() const noexcept { return spec(op_).name; }

char const* WkvPluginCreator::getPluginVersion() const noexcept {
    static const std::string version = std::to_string(kOpVersion);
    return version.c_str();
}

char const* WkvPluginCreator::getPluginNamespace() const noexcept { return kPluginNamespace; }

}  // namespace vrwkv::trt

// ------------------------------------------------------------------------------------------------ exports

extern "C" {

// TensorRT's entry points for a plugin library (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins).
__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    vrwkv::trt::g_logger_finder = finder;
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    using vrwkv::trt::Op;
    using vrwkv::trt::WkvPluginCreator;
    static WkvPluginCreator wkv6(Op::kWkv6), wkv7(Op::kWkv7), biwkv(Op::kBiWkv), biwkv6(Op::kBiWkv6);
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&wkv6, &wkv7, &biwkv, &biwkv6};
    nbCreators = int32_t(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

}  // extern "C"
