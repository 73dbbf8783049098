"""What a user serves after training a language model: the merged decoder, the LoRA as an
``.onnx_adapter`` that plain onnxruntime applies over the base decoder, and the PEFT-format
adapter that peft loads.

- device side (stock onnxruntime ≥ 1.20, which has ``AdapterFormat``): two runs' adapters over
  one base decoder session, switched per request, each equal to its own merged decoder; no
  adapter: the base model; two adapters setting the same tensors are refused;
- workstation side (transformers + peft as the reference): peft's ``PeftModel.from_pretrained``
  on the merged folder's ``adapter/`` gives the merged decoder's logits; our LoRA gradients
  equal peft's.

Logits are compared norm-wise at the suite's fp32 bound (tests/numerics.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundles import micro_bundle

from edgetune.bundle import Bundle
from edgetune.data import build_bpe_tokenizer
from edgetune.errors import EdgetuneError
from edgetune.merge import merge_run

from numerics import assert_close_normwise

ort = pytest.importorskip("onnxruntime")
WORDS = "the cat dog sat on mat ran to park a big small red blue house tree and".split()


def corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 16)))) for _ in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    build_bpe_tokenizer(corpus(300, 0), d / "tokenizer.json", 512)
    (d / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus(120, 1)))
    return d


def _train(bundle, files, out, seed):
    from edgetune.train import load_data
    from edgetune.train.config import TrainConfig
    from edgetune.train.trainer import Trainer

    t = Trainer(bundle, load_data(bundle, files / "train.jsonl"), None,
                TrainConfig(steps=8, batch_size=8, lr=3e-2, seed=seed), out=out)
    t.fit()
    return merge_run(out, "last")


def _logits(session, ids, options=None):
    spec_layers = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    shape = {i.name: i.shape for i in session.get_inputs()}
    feeds = {"input_ids": ids}
    for name in spec_layers:
        _, heads, _, dim = shape[name]
        feeds[name] = np.zeros((1, heads, 0, dim), np.float32)
    return session.run(["logits"], feeds, options)[0]


def test_adapters_over_one_base_equal_their_merged_decoders(files, tmp_path):
    from edgetune.onnx_adapter import available, run_options

    bundle = Bundle.open(micro_bundle("llama-micro", "lora", tokenizer=str(files / "tokenizer.json"),
                                      max_tokens=64))  # exported (and cached) by the workstation run
    if not available():
        pytest.skip(f"onnxruntime {ort.__version__} has no AdapterFormat (the training build)")
    merged = [_train(bundle, files, tmp_path / f"run{s}", s) for s in (1, 2)]
    infos = [json.loads((m / "merged.json").read_text()) for m in merged]
    assert all(i["onnx_adapter"]["file"] == "adapter.onnx_adapter" for i in infos)
    ids = np.random.default_rng(0).integers(0, 512, (1, 12)).astype(np.int64)
    base = ort.InferenceSession(str(merged[0] / "decoder_lora.onnx"), providers=["CPUExecutionProvider"])
    want = [_logits(ort.InferenceSession(str(m / "inference.onnx"), providers=["CPUExecutionProvider"]), ids)
            for m in merged]
    assert np.linalg.norm(want[0] - want[1]) > 1e-3 * np.linalg.norm(want[0])  # two different adapters
    options = [run_options([m / "adapter.onnx_adapter"]) for m in merged]
    for k in (0, 1, 0):  # switched per request on one session
        assert_close_normwise(_logits(base, ids, options[k][0]), want[k], f"adapter {k}")
    initial = ort.InferenceSession(str(bundle.path / "inference" / "inference.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert_close_normwise(_logits(base, ids), _logits(initial, ids), "base without an adapter")
    with pytest.raises(EdgetuneError, match="both set"):
        run_options([m / "adapter.onnx_adapter" for m in merged])


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_peft_loads_the_merged_adapter(tmp_path, kind):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from edgetune.export import export_bundle

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=128, tie_word_embeddings=True,
                                       eos_token_id=None, bos_token_id=None)
        hf = transformers.LlamaForCausalLM(cfg).eval()
    else:  # Conv1D base weights: the adapter's config says fan_in_fan_out
        cfg = transformers.GPT2Config(vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                      eos_token_id=None, bos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0)
        hf = transformers.GPT2LMHeadModel(cfg).eval()
    folder = tmp_path / "llama"
    hf.save_pretrained(str(folder))
    build_bpe_tokenizer(corpus(300, 0), folder / "tokenizer.json", 512)
    files = tmp_path
    (files / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus(120, 1)))
    bundle = Bundle.open(export_bundle(folder, "lora", tmp_path / "bundle", max_tokens=64))
    merged = _train(bundle, files, tmp_path / "run", 0)
    config = json.loads((merged / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    model = peft.PeftModel.from_pretrained(hf, str(merged / "adapter")).eval()
    ids = np.random.default_rng(0).integers(0, 512, (1, 12)).astype(np.int64)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
        with model.disable_adapter():
            base = model(torch.from_numpy(ids)).logits.numpy()
    assert np.linalg.norm(want - base) > 1e-3 * np.linalg.norm(base)  # the adapter trained
    session = ort.InferenceSession(str(merged / "inference.onnx"), providers=["CPUExecutionProvider"])
    got = _logits(session, ids)
    assert_close_normwise(got, want, "merged decoder vs peft")


def test_generate_streams_from_a_run_without_torch(files, tmp_path):
    import subprocess
    import sys

    bundle = Bundle.open(micro_bundle("llama-micro", "lora", tokenizer=str(files / "tokenizer.json"),
                                      max_tokens=64))
    _train(bundle, files, tmp_path / "run", 0)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from edgetune.cli import main\n"
            "main(['generate', sys.argv[1], '--prompt', 'the cat', '--max-new-tokens', '6'])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("the cat") and len(out.stdout.strip()) > len("the cat")
