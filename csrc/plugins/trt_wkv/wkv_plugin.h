// TensorRT IPluginV3 plugins for the nodes of the vrwkv ONNX domain (vrwkv_edge/ops/custom_op_contract.py):
// WKV6, WKV7, BiWKV, BiWKV6.  One plugin class, parameterised by the node type's IO table (kOps in
// wkv_plugin.cpp), and one creator per node type, registered as name = op type, version = kOpVersion,
// namespace = "vrwkv" (the ONNX domain: TensorRT's ONNX parser looks a custom node up by its op type, its
// plugin_version attribute (default "1") and its plugin_namespace attribute, falling back to the node's domain).
//
// TensorRT >= 10.0 (IPluginV3 / IPluginV3OneCore / OneBuild / OneRuntime, IPluginCreatorV3One).  The library
// exports getCreators and setLoggerFinder, so trtexec --dynamicPlugins / IPluginRegistry::loadLibrary load it.
#pragma once
#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace vrwkv::trt {

inline constexpr char kPluginNamespace[] = "vrwkv";

enum class Op : int { kWkv6 = 0, kWkv7 = 1, kBiWkv = 2, kBiWkv6 = 3 };

// BiWKV's "semantics" attribute (the contract's BIWKV_SEMANTICS): the only attribute of any vrwkv node.
enum class BiWkvSemantics : int { kOfficial = 0, kFormula = 1 };

class WkvPlugin : public nvinfer1::IPluginV3,
                  public nvinfer1::IPluginV3OneCore,
                  public nvinfer1::IPluginV3OneBuild,
                  public nvinfer1::IPluginV3OneRuntime {
  public:
    WkvPlugin(Op op, BiWkvSemantics semantics);
    ~WkvPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                            nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* outputs,
                            int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

  private:
    // Checks the concrete (or, at build time, the known) dims of every input against the node's contract; an empty
    // string when they fit, else the reason.  -1 (a dynamic dim) matches anything.
    std::string checkDims(nvinfer1::Dims const* dims, int32_t nbInputs) const;

    Op op_;
    BiWkvSemantics semantics_;
    // Backing store of getFieldsToSerialize (must outlive the call).
    std::string semantics_field_;
    std::vector<nvinfer1::PluginField> fields_;
    nvinfer1::PluginFieldCollection field_collection_{};
};

class WkvPluginCreator : public nvinfer1::IPluginCreatorV3One {
  public:
    explicit WkvPluginCreator(Op op);
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

  private:
    Op op_;
    std::vector<nvinfer1::PluginField> field_names_;
    nvinfer1::PluginFieldCollection field_collection_{};
};

}  // namespace vrwkv::trt
