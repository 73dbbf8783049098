"""Generation from the exported decoder graph (export/onnx/decoder.py) on onnxruntime, against
transformers and against our own training forward.

- 32 greedy tokens equal transformers' ``generate`` on the same random LLaMA and GPT-2 weights (a
  checkpoint folder the test saves). Greedy decoding is a chain of argmaxes, so the check is
  only sound where no step is a near-tie: the test takes a prompt whose path under transformers
  has every step's top-two logit gap at least 1e-3 of the logits' scale, far above fp32
  reassociation differences between CPUs (≈1e-6 relative), then asks for the identical ids;
- the cache: the prefill's logits and each one-token step's logits equal the training
  forward's logits over the whole sequence (norm-wise, tests/numerics.py) — prefix tuning
  included, whose keys and values are the initial cache;
- sampling with a seed repeats; the CLI streams text.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from edgetune.cli import main  # noqa: E402
from edgetune.data import build_bpe_tokenizer  # noqa: E402
from edgetune.generate import Generator, Sampling, initial_past, next_token, open_source  # noqa: E402

from numerics import assert_close_normwise  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers.logging.set_verbosity_error()
WORDS = "the cat dog sat on mat ran to park a big small red blue house tree".split()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def checkpoint(request, tmp_path_factory):
    """A random transformers LLaMA (GQA, tied head) or GPT-2 saved with a BPE tokenizer.json."""
    folder = tmp_path_factory.mktemp("hf") / request.param
    torch.manual_seed(0)
    if request.param == "llama":
        cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=128, tie_word_embeddings=True,
                                       initializer_range=0.2, eos_token_id=None, bos_token_id=None,
                                       pad_token_id=0)
        model = transformers.LlamaForCausalLM(cfg).eval()
    else:
        cfg = transformers.GPT2Config(vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                      initializer_range=0.2, eos_token_id=None, bos_token_id=None,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(str(folder))
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=10)) for _ in range(200)]
    build_bpe_tokenizer(texts, folder / "tokenizer.json", 512)
    return model, folder


def _bundle(checkpoint, tmp_path, method="lora"):
    from edgetune.export import export_bundle

    _, folder = checkpoint
    return export_bundle(folder, method, tmp_path / f"bundle-{method}", max_tokens=64)


def _tie_free_path(hf, tries: int = 8):
    """A prompt whose 32 greedy steps under transformers have no near-tie (top-two logit gap
    ≥ 1e-3 of the logits' scale at every step), and those 32 ids."""
    for seed in range(tries):
        prompt = np.random.default_rng(seed).integers(1, 512, 5).tolist()
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32, min_new_tokens=32,
                              output_scores=True, return_dict_in_generate=True, pad_token_id=0)
        gaps = [float(torch.topk(sc[0], 2).values.diff().abs()) / float(sc[0].abs().max())
                for sc in out.scores]
        if min(gaps) > 1e-3:
            return prompt, out.sequences[0, len(prompt):].tolist()
    pytest.fail(f"no tie-free greedy path in {tries} prompts")


def test_greedy_tokens_equal_transformers_generate(checkpoint, tmp_path):
    hf, _ = checkpoint
    src = open_source(_bundle(checkpoint, tmp_path))  # LoRA's B = 0: the checkpoint's own model
    prompt, want = _tie_free_path(hf)
    got = list(Generator(src.graph, src.spec).ids(prompt, Sampling(max_new_tokens=32)))
    assert got == want


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_cache_steps_equal_the_whole_sequence_forward(checkpoint, tmp_path, method):
    from edgetune.export.onnx import prepare_model

    _, folder = checkpoint
    model = prepare_model(folder, method, seed=0)
    with torch.no_grad():  # trained-looking adapters: LoRA's B and the prefix away from init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    from edgetune.bundle import INFERENCE_DIR, Bundle
    from edgetune.generate import _decoder_index
    from edgetune.merge import write_inference

    # the bundle's graph with these values written in, as a run's checkpoint would have them
    b = Bundle.open(_bundle(checkpoint, tmp_path, method))
    index, spec = _decoder_index(b)
    arrays = {n: p.detach().numpy() for n, p in model.named_parameters() if p.requires_grad}
    graph = tmp_path / "decoder.onnx"
    write_inference(b.path / INFERENCE_DIR, index, arrays, graph)
    gen = Generator(graph, spec, initial_past(spec, arrays))
    ids = torch.randint(0, 512, (1, 12))
    with torch.no_grad():
        whole = model.forward_features(ids).logits[0].numpy()
    sess = gen.session
    past = gen._empty_past()
    outs = sess.run(None, {"input_ids": ids[:, :8].numpy(), **past})
    assert_close_normwise(outs[0][0], whole[:8], f"{method} prefill")
    for t in range(8, 12):
        past = dict(zip(gen.past_names, outs[1:]))
        outs = sess.run(None, {"input_ids": ids[:, t:t + 1].numpy(), **past})
        assert_close_normwise(outs[0][0, 0], whole[t], f"{method} step {t}")


def test_sampling_repeats_with_its_seed():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50)
    draw = lambda seed, **kw: [next_token(logits, Sampling(temperature=1.0, seed=seed, **kw),  # noqa: E731
                                          np.random.default_rng(seed)) for _ in range(1)]
    assert draw(3) == draw(3)
    nucleus = Sampling(temperature=1.0, top_p=0.05)  # only the most likely token is left
    assert next_token(logits, nucleus, np.random.default_rng(1)) == int(logits.argmax())
    assert next_token(logits, Sampling(), rng) == int(logits.argmax())


def test_cli_streams_text(checkpoint, tmp_path):
    bundle = _bundle(checkpoint, tmp_path)
    res = CliRunner().invoke(main, ["generate", str(bundle), "--prompt", "the cat", "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("the cat") and len(res.output.strip()) > len("the cat")
    sampled = [CliRunner().invoke(main, ["generate", str(bundle), "--prompt", "the cat", "--max-new-tokens",
                                         "8", "--temperature", "1", "--seed", "4"]).output for _ in range(2)]
    assert sampled[0] == sampled[1]
    bad = CliRunner().invoke(main, ["generate", str(bundle), "--prompt", "x", "--top-p", "0"])
    assert bad.exit_code != 0 and "top_p" in bad.output and "Traceback" not in bad.output
    assert json.loads((bundle / "manifest.json").read_text())["model"]["task"] == "causal_lm"
