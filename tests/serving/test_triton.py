"""The Triton model repository: configuration parsed by Triton's own schema and checked against the graph, the
serving graph driven as the sequence batcher drives it (controls, implicit state, interleaved sequences), the
chat client, and the command line."""
import random
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import assert_close, require_extra
from vrwkv_edge.cli import main
from vrwkv_edge.generation import SamplingParams, generate
from vrwkv_edge.runtime.artefact import state_input_names, state_output_names
from vrwkv_edge.serving.triton import (RepositoryError, ServingOptions, check_repository, parse_config,
                                       write_triton_repository)
from vrwkv_edge.tokenizer import ByteTokenizer

pytestmark = [pytest.mark.usefixtures("quiet_torch"), pytest.mark.export, pytest.mark.serving]
require_extra("serving")              # tritonclient ships Triton's model-configuration schema
from google.protobuf import text_format  # noqa: E402  (protobuf comes with tritonclient)
from tritonclient.grpc import model_config_pb2  # noqa: E402

OPTIONS = ServingOptions(max_batch_size=8, preferred_batch_size=(4, 8), max_candidate_sequences=16)


@pytest.fixture(scope="module")
def repo(serving_export, tmp_path_factory):
    return write_triton_repository(serving_export, tmp_path_factory.mktemp("triton") / "repo", name="rwkv",
                                   options=OPTIONS)


@pytest.fixture(scope="module")
def ort_model(serving_export):
    from vrwkv_edge.runtime.ort import OrtModel  # needs onnxruntime (export extra)

    return OrtModel(serving_export, threads=1, spinning=False)


def test_layout_and_config_parse_with_tritons_schema(repo, serving_export, serving_model):
    import onnx

    assert sorted(p.name for p in repo.iterdir()) == ["rwkv"]
    assert (repo / "rwkv" / "1" / "model.onnx").is_file() and (repo / "rwkv" / "config.pbtxt").is_file()
    assert not list(repo.parent.glob(".repo.partial-*")), "the temporary build directory was left behind"
    # Triton's own schema: text_format.Parse raises on any unknown field, enum value or misplaced message
    c = text_format.Parse((repo / "rwkv" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert c.name == "rwkv" and c.platform == "onnxruntime_onnx" and c.max_batch_size == 8
    sb = c.sequence_batching
    assert sb.oldest.max_candidate_sequences == 16 and list(sb.oldest.preferred_batch_size) == [4, 8]
    kinds = {ci.name: model_config_pb2.ModelSequenceBatching.Control.Kind.Name(ci.control[0].kind)
             for ci in sb.control_input}
    assert kinds == {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END",
                     "READY": "CONTROL_SEQUENCE_READY", "CORRID": "CONTROL_SEQUENCE_CORRID"}
    assert [c.instance_group[0].count, c.instance_group[0].kind] == [1, model_config_pb2.ModelInstanceGroup.KIND_AUTO]
    # the states against the graph the configuration points to
    cfg = serving_model.cfg
    g = onnx.load(str(repo / "rwkv" / "1" / "model.onnx")).graph
    graph_in = {v.name: v.type.tensor_type for v in g.input}
    graph_out = {v.name: v.type.tensor_type for v in g.output}
    assert [s.input_name for s in sb.state] == state_input_names(cfg.n_layer)
    assert [s.output_name for s in sb.state] == state_output_names(cfg.n_layer)
    want = {"shift_att": [cfg.n_embd], "wkv": [cfg.n_head, cfg.head_size, cfg.head_size], "shift_ffn": [cfg.n_embd]}
    for s in sb.state:
        assert list(s.dims) == want[s.input_name.rsplit(".", 1)[1]]
        assert s.data_type == model_config_pb2.TYPE_FP32 and len(s.initial_state) == 1
        assert s.initial_state[0].zero_data and list(s.initial_state[0].dims) == list(s.dims)
        for t in (graph_in[s.input_name], graph_out[s.output_name]):
            assert t.elem_type == onnx.TensorProto.FLOAT
            assert t.shape.dim[0].dim_param == "batch"
            assert [d.dim_value for d in t.shape.dim[1:]] == list(s.dims)
    assert set(graph_in) == {"input_ids", "START", "END", "READY", "CORRID"} | set(state_input_names(cfg.n_layer))
    assert graph_in["CORRID"].elem_type == onnx.TensorProto.UINT64
    assert graph_in["START"].elem_type == onnx.TensorProto.INT32
    assert list(c.output[0].dims) == [cfg.vocab_size] and list(c.input[0].reshape.shape) == []
    # the client's side files and the full check
    assert (repo / "rwkv" / "metadata.json").is_file()
    assert check_repository(repo) == ["rwkv"]


def test_check_refuses_what_triton_refuses(repo, tmp_path):
    bad = tmp_path / "repo"
    shutil.copytree(repo, bad)
    cfg = bad / "rwkv" / "config.pbtxt"
    text = cfg.read_text()
    cfg.write_text(text.replace("max_candidate_sequences", "max_candidates"))
    with pytest.raises(RepositoryError, match="config.pbtxt: not a valid Triton model configuration"):
        check_repository(bad)
    cfg.write_text(text.replace("dims: [64]", "dims: [65]", 1))
    with pytest.raises(RepositoryError, match=r"past_key_values.0.shift_att has dims \[64\]"):
        check_repository(bad)
    start = text.index('  control_input {\n    name: "END"')
    cfg.write_text(text[:start] + text[text.index('  control_input {\n    name: "READY"'):])
    with pytest.raises(RepositoryError, match=r"graph inputs \['END'\] are neither"):
        check_repository(bad)
    cfg.write_text(text)
    (bad / "rwkv" / "1" / "model.onnx").rename(bad / "rwkv" / "1" / "other.onnx")
    with pytest.raises(RepositoryError, match="model.onnx is missing"):
        check_repository(bad)


def _drive(emulator, sequences, rng, max_rows, slots=None):
    """Feeds every sequence token by token in random interleavings: each call batches one request of several
    live sequences (the oldest strategy), sequences start at random calls and end with END on their last
    request.  A sequence's inputs are its prompt, then its own greedy tokens.  Returns each one's logits."""
    live, waiting = [], list(range(len(sequences)))
    fed = {i: 0 for i in waiting}
    logits = {i: [] for i in waiting}
    generated = {i: [] for i in waiting}
    while live or waiting:
        if waiting and (not live or rng.random() < 0.5):
            live.append(waiting.pop(0))
        batch = rng.sample(live, min(len(live), rng.randint(1, max_rows)))
        reqs = []
        for i in batch:
            prompt, n_new = sequences[i]
            k = fed[i]
            token = prompt[k] if k < len(prompt) else generated[i][k - len(prompt)]
            last = k == len(prompt) + n_new - 1
            reqs.append((i, token, k == 0, last))
        from vrwkv_edge.serving.emulator import SequenceRequest  # the module under test needs onnxruntime
        outs = emulator.infer([SequenceRequest(1000 + i, {"input_ids": np.array([t])}, s, e) for i, t, s, e in reqs],
                              slots=None if slots is None else max(slots, len(reqs)))
        for (i, _, _, last), out in zip(reqs, outs):
            prompt, _ = sequences[i]
            fed[i] += 1
            if fed[i] >= len(prompt):
                logits[i].append(torch.from_numpy(out["logits"].copy()))
                generated[i].append(int(out["logits"].argmax()))
            if last:
                live.remove(i)
    return logits, generated


@pytest.mark.parametrize("fresh_state,slots", [("config", None), ("nan", 8)])
def test_serving_graph_under_the_sequence_batcher_equals_plain_runtime(repo, ort_model, fresh_state, slots):
    from vrwkv_edge.serving.emulator import SequenceBatcherEmulator  # needs onnxruntime

    emulator = SequenceBatcherEmulator(repo / "rwkv", fresh_state=fresh_state)
    rng = random.Random(3)
    vocab = ort_model.cfg.vocab_size
    sequences = [([rng.randrange(1, vocab) for _ in range(rng.randint(1, 9))], rng.randint(1, 8)) for _ in range(8)]
    logits, generated = _drive(emulator, sequences, rng, max_rows=6, slots=slots)
    assert max(emulator.batch_sizes) >= 4 and emulator.live_sequences == []
    for i, (prompt, n_new) in enumerate(sequences):
        solo = generate(ort_model, prompt, params=SamplingParams.greedy(max_new_tokens=n_new, stop_tokens=()))
        # the last generated token is never fed back: the emulator's greedy tokens are one longer than fed
        assert generated[i][:n_new] == solo.tokens[0], f"sequence {i}: tokens differ from the plain runtime"
        ref, state = ort_model.forward(torch.tensor([prompt]), last_only=False)
        refs = [ref[0, -1]]
        for t in solo.tokens[0][:-1]:
            lg, state = ort_model.step(torch.tensor([t]), state)
            refs.append(lg[0])
        for k, (got, want) in enumerate(zip(logits[i], refs)):
            assert_close(f"sequence {i} step {k}", want, got, 1e-5)


def test_sequence_batcher_rules(repo):
    from vrwkv_edge.serving.emulator import SequenceBatcherEmulator, SequenceRequest

    emulator = SequenceBatcherEmulator(repo / "rwkv")
    with pytest.raises(RepositoryError, match="must specify the START flag"):
        emulator.infer([SequenceRequest(5, {"input_ids": np.array([1])})])
    with pytest.raises(RepositoryError, match="two requests of one sequence"):
        emulator.infer([SequenceRequest(5, {"input_ids": np.array([1])}, True)] * 2)
    with pytest.raises(RepositoryError, match="max_batch_size is 8"):
        emulator.infer([SequenceRequest(i, {"input_ids": np.array([1])}, True) for i in range(9)])
    emulator.infer([SequenceRequest(5, {"input_ids": np.array([1])}, True)])
    assert emulator.live_sequences == [5]
    emulator.infer([SequenceRequest(5, {"input_ids": np.array([2])}, end=True)])
    assert emulator.live_sequences == []


def test_chat_client_over_the_sequence_batcher(repo, ort_model):
    from vrwkv_edge.serving.emulator import EmulatorTransport, SequenceBatcherEmulator
    from vrwkv_edge.serving.triton_client import TritonChat
    from vrwkv_edge.visualrwkv.prompts import followup_ids

    emulator = SequenceBatcherEmulator(repo / "rwkv", fresh_state="nan")
    tok = ByteTokenizer()
    params = SamplingParams.greedy(max_new_tokens=6, stop_tokens=())
    chat = TritonChat(EmulatorTransport(emulator), tok, params, sequence_id=7)
    text1 = "".join(chat.ask("Hi there"))
    first = list(chat.last_tokens)
    "".join(chat.ask("And then?"))
    second = list(chat.last_tokens)
    # the plain runtime over the same conversation
    ids1 = followup_ids(tok, "Hi there")
    ref1 = generate(ort_model, ids1, params=params)
    assert first == ref1.tokens[0] and text1 == tok.decode(first)
    _, state = ort_model.forward(torch.tensor([ids1 + first]), last_only=False)
    ref2 = generate(ort_model, followup_ids(tok, "And then?"), state=state, params=params)
    assert second == ref2.tokens[0]
    assert emulator.live_sequences == [7]
    chat.close()
    assert emulator.live_sequences == [] and chat.closed
    with pytest.raises(RuntimeError, match="closed"):
        chat.feed([1])


def test_export_triton_cli(serving_export, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["export-triton", str(serving_export), "--out", str(out), "--max-batch-size", "4", "--check"]) == 0
    c = parse_config(out / serving_export.name / "config.pbtxt")
    assert c.max_batch_size == 4 and list(c.sequence_batching.oldest.preferred_batch_size) == [4]
    assert "docker run" in capsys.readouterr().out
    # an existing repository, a missing export, bad options: one error line, exit 2, nothing written
    for argv, msg in ([str(serving_export), "--out", str(out)], "exists"),\
                     ([str(tmp_path / "nope"), "--out", str(tmp_path / "r2")], "no such directory"),\
                     ([str(serving_export), "--out", str(tmp_path / "r3"), "--preferred-batch-size", "64"],
                      "preferred_batch_size"),\
                     ([str(serving_export), "--out", str(tmp_path / "r4"), "--backend", "tensorrt"], "needs an engine"):
        assert main(["export-triton"] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_tensorrt_repository_takes_an_engine(serving_export, tmp_path):
    engine = tmp_path / "decode.plan"
    engine.write_bytes(b"not really an engine")       # opaque to everything but TensorRT itself
    out = write_triton_repository(serving_export, tmp_path / "repo", name="rwkv", options=OPTIONS, engine=engine)
    c = parse_config(out / "rwkv" / "config.pbtxt")
    assert c.platform == "tensorrt_plan" and (out / "rwkv" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert "CORRID" not in {ci.name for ci in c.sequence_batching.control_input}
    assert check_repository(out) == ["rwkv"]


@pytest.fixture(scope="module")
def embeds_repo(serving_export, tmp_path_factory):
    return write_triton_repository(serving_export, tmp_path_factory.mktemp("triton") / "repo", name="rwkv",
                                   options=OPTIONS, embeds=True)


def test_embeddings_entry_mixes_tokens_and_embedding_rows(embeds_repo, serving_model):
    from vrwkv_edge.serving.emulator import SequenceBatcherEmulator, SequenceRequest

    c = parse_config(embeds_repo / "rwkv" / "config.pbtxt")
    assert [(i.name, list(i.dims)) for i in c.input] == [("input_ids", [1]), ("inputs_embeds", [64])]
    assert check_repository(embeds_repo) == ["rwkv"]
    emulator = SequenceBatcherEmulator(embeds_repo / "rwkv", fresh_state="nan")
    gen = torch.Generator().manual_seed(0)
    rows = 0.5 * torch.randn(4, 64, generator=gen)
    # sequence 1: token, 4 embedding rows, token; sequence 2 (text only) in the same batches
    plan1 = [("t", 5)] + [("e", r) for r in rows] + [("t", 9)]
    plan2 = [("t", t) for t in (3, 1, 4, 1, 5, 9)]
    got = {1: [], 2: []}
    for k in range(6):
        reqs = []
        for sid, plan in ((1, plan1), (2, plan2)):
            kind, v = plan[k]
            emb = v.numpy() if kind == "e" else np.zeros(64, np.float32)
            reqs.append(SequenceRequest(sid, {"input_ids": np.array([-1 if kind == "e" else v]),
                                              "inputs_embeds": emb}, start=k == 0))
        for sid, out in zip((1, 2), emulator.infer(reqs)):
            got[sid].append(torch.from_numpy(out["logits"].copy()))
    for sid, plan in ((1, plan1), (2, plan2)):
        state = serving_model.new_state(1)
        for k, (kind, v) in enumerate(plan):
            if kind == "e":
                ref, state = serving_model.step(inputs_embeds=v[None], state=state)
            else:
                ref, state = serving_model.step(torch.tensor([v]), state)
            assert_close(f"sequence {sid} step {k}", ref[0], got[sid][k], 1e-4)    # ORT vs PyTorch


def test_chat_client_image_flow(embeds_repo, serving_model):
    from vrwkv_edge.serving.emulator import EmulatorTransport, SequenceBatcherEmulator
    from vrwkv_edge.serving.triton_client import TritonChat
    from vrwkv_edge.visualrwkv.prompts import ImageSlot, question_prompt

    emulator = SequenceBatcherEmulator(embeds_repo / "rwkv")
    tok = ByteTokenizer()
    params = SamplingParams.greedy(max_new_tokens=5, stop_tokens=())
    image = 0.5 * torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    meta = {"visual": {"config": {"version": "v7", "scan": "unidirectional"}}}
    chat = TritonChat(EmulatorTransport(emulator), tok, params, sequence_id=3)
    "".join(chat.ask_image(image.numpy(), "What is it?", meta))
    # the same prompt through the PyTorch model, token by token and row by row
    state, logits = serving_model.new_state(1), None
    for item in question_prompt(tok, "What is it?", "v7").items:
        if isinstance(item, ImageSlot):
            for row in image:
                logits, state = serving_model.step(inputs_embeds=row[None], state=state)
        else:
            logits, state = serving_model.forward(torch.tensor([item]), state, last_only=True)
    ref = generate(serving_model, state=state, prefix_logits=logits, params=params)
    assert chat.last_tokens == ref.tokens[0]
    bidirectional = {"visual": {"config": {"version": "v6", "scan": "bidirectional"}}}
    with pytest.raises(ValueError, match="only the unidirectional scan"):
        next(chat.ask_image(image.numpy(), "Again?", bidirectional))
    with pytest.raises(ValueError, match="no inputs_embeds entry"):
        from vrwkv_edge.serving.triton_client import request_inputs
        request_inputs(-1, image[0].numpy(), None)


def test_vision_model_config_parses():
    """The VisualRWKV tower's configuration (stateless, dynamic batching) for a three-tower export's I/O; the
    whole repository of a real VisualRWKV export is checked the same way (check_repository) when written."""
    from vrwkv_edge.serving.triton import render_pbtxt, vision_config

    meta = {"graphs": {"vision": {
        "inputs": [{"name": f"pixel_values_{t}", "dtype": "float32", "shape": ["batch", 3, s, s]}
                   for t, s in (("dino", 56), ("siglip", 56), ("sam", 128))],
        "outputs": [{"name": "image_embeds", "dtype": "float32", "shape": ["batch", 16, 128]}]}}}
    text = render_pbtxt(vision_config("m_vision", meta, OPTIONS))
    c = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert c.max_batch_size == 4 and c.HasField("dynamic_batching") and not c.HasField("sequence_batching")
    assert [list(i.dims) for i in c.input] == [[3, 56, 56], [3, 56, 56], [3, 128, 128]]
    assert list(c.output[0].dims) == [16, 128]


def test_triton_chat_cli_input_errors(tmp_path, capsys):
    bad = tmp_path / "metadata.json"
    bad.write_text("{not json")
    for argv, msg in ((["--image", "cat.jpg"], "--image needs --metadata"),
                      (["--image", "cat.jpg", "--metadata", str(bad)], "invalid JSON"),
                      (["--image", "cat.jpg", "--metadata", str(tmp_path / "none.json")], "none.json")):
        assert main(["triton-chat", "--model", "m", "--prompt", "hi"] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err, err
