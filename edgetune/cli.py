"""The ``edgetune`` command line. A failure prints one line (``edgetune.cli_errors``): user
errors exit with code 2, bugs with 1, Ctrl-C with 130; ``--debug`` shows the traceback.

Workstation commands (``models``, ``methods``, ``export``) import ``edgetune.export`` lazily:
the device commands must work where torch is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from edgetune import __version__
from edgetune.bundle import BASE_DTYPES, MODES
from edgetune.cli_errors import ReportingGroup
from edgetune.errors import UsageError
from edgetune.fleet.cli import fleet as fleet_group

# inference_tokens.REQUESTS, without importing numpy at start-up (tests/test_inference_tokens.py)
TOKEN_REQUESTS = ("run", "all", "trained")


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgetune")
@click.option("--debug", is_flag=True, envvar="EDGETUNE_DEBUG",
              help="Show the traceback of an error (also EDGETUNE_DEBUG=1).")
def main(debug: bool) -> None:
    """Fine-tune transformers on the device that uses them."""


@main.command()
def models() -> None:
    """List the registered models."""
    from edgetune.export.models import list_models

    tasks = {"classification": "classifier", "causal_lm": "causal LM"}
    rows = [(m.name, m.family, tasks.get(m.task, m.task), m.description) for m in list_models()]
    _table(("model", "family", "task", "description"), rows)


@main.command()
def methods() -> None:
    """List the PEFT methods and their options."""
    import dataclasses

    from edgetune.export.peft import list_methods

    rows = []
    for m in list_methods():
        opts = ", ".join(f"{f.name}={_show(f.default if f.default is not dataclasses.MISSING else None)}"
                         for f in dataclasses.fields(m.config)) or "-"
        flags = ("mergeable" if m.mergeable else "-") + (", HF PEFT" if m.hf_peft_type else "")
        rows.append((m.name, m.description, flags, opts))
    _table(("method", "what it trains", "notes", "options (--set key=value)"), rows)


@main.command("export")
@click.argument("model")
@click.option("--method", required=True, help="PEFT method (edgetune methods lists them).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Method option; repeatable.")
@click.option("--num-classes", type=int, default=None, help="Classes of the task head (classifiers).")
@click.option("--out", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--mode", type=click.Choice([*MODES, "both"]), default="both", show_default=True,
              help="static: ORT's artifacts; adaptive: per-layer graphs for ALaST.")
@click.option("--max-tokens", type=int, default=None,
              help="Longest text the device feeds (text models; default 128).")
@click.option("--tokenizer", type=click.Path(), default=None,
              help="tokenizer.json for a text model without one.")
@click.option("--pooling", type=click.Choice(["cls", "mean"]), default=None,
              help="BERT: classify from the class token or the mean of the tokens (default: what the "
                   "checkpoint declares, else cls).")
@click.option("--image-size", type=int, default=None,
              help="ViT: another resolution than the model's (same patches; a checkpoint's "
                   "position embedding is resampled), e.g. pretrained at 28 px, fine-tuned at 56.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for newly initialised weights.")
@click.option("--base", type=click.Choice(BASE_DTYPES), default="fp32", show_default=True,
              help="int8: the frozen weights are stored as int8 constants in the graphs (forward "
                   "per output channel, 7 bits; gradients in blocks of 32) and their products run "
                   "on onnxruntime's int8 kernels: 1.3-1.4x faster steps at a ~2% product error. "
                   "Adaptive mode only, not with --method full; the device needs onnxruntime "
                   ">= 1.22 on a CPU. See docs/int8-base.md.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def export_cmd(model, method, settings, num_classes, out, mode, max_tokens, tokenizer, pooling,
               image_size, seed, base, overwrite):
    """Write an ONNX Runtime training bundle for MODEL (a name from `edgetune models` or a
    checkpoint folder) with a PEFT method injected."""
    from edgetune.export import export_bundle
    from edgetune.export.models.registry import model_task

    if num_classes is None and model_task(model) == "classification":
        raise UsageError(f"--num-classes: {model} is a classifier; give its number of classes (>= 2)")
    export_bundle(model, method, out, method_config=list(settings), num_classes=num_classes, mode=mode,
                  max_tokens=max_tokens, tokenizer=tokenizer, pooling=pooling,
                  image_size=image_size, seed=seed, base=base,
                  overwrite=overwrite, log=lambda msg: click.echo(msg, err=True))
    click.echo(out)


def _lr(value: str) -> float | None:
    """``--lr``: a number, or None for 'auto'."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"--lr {value!r}: a number or 'auto'") from None


def _say_notes(ds) -> None:
    """What the loader did to a dataset on the way to the model's inputs, once per run."""
    for note in getattr(ds, "notes", ()) if ds is not None else ():
        click.echo(f"note: {ds.path}: {note}", err=True)


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help=".npz, image folder, .csv or .jsonl.")
@click.option("--val", type=click.Path(), default=None, help="Validation data (best checkpoint by accuracy).")
@click.option("--val-split", type=float, default=None,
              help="Without --val: validate on this fraction of --data, held out and never trained "
                   "on (default 0.1 for --schedule alast, whose inference tokens are decided on it; "
                   "else 0). 0: no validation (ALaST then follows the rule measured for the input "
                   "kind: images keep the trained budgets, text every token).")
@click.option("--steps", type=int, default=0, help="Optimizer steps (or --epochs).")
@click.option("--epochs", type=float, default=0.0, help="Passes over --data (or --steps).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--pad-multiple", type=int, default=1, show_default=True,
              help="Pad text batches to a multiple of this many tokens: fewer batch lengths, a lower "
                   "peak RSS, a little more time (8: -22 % peak, +10 % time on minilm-l6, docs/demo.md).")
@click.option("--lr", default="1e-3", show_default=True,
              help="Peak learning rate, or 'auto': before training, a range test of 40 steps on "
                   "--data (from 1e-6 up) brackets it, then 3-5 trials of the run's first 100 steps "
                   "(at the bracket x3.2, x1, /3.2, then on past the best, from /10 to x10) pick it "
                   "by held-out loss; all of it goes to RUN/run.json.")
@click.option("--warmup", type=int, default=0, show_default=True,
              help="Linear warm-up steps, then cosine decay.")
@click.option("--schedule", type=click.Choice(["static", "alast"]), default="static", show_default=True)
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="Bundle mode to run (default: adaptive where exported; static runs ORT's own "
                   "training artifacts, on the training build only).")
@click.option("--out", type=click.Path(), default=None, help="Run folder (default runs/<bundle name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores).")
@click.option("--checkpoint-every", type=int, default=0, help="Steps between checkpoints (0: at the end).")
@click.option("--eval-every", type=int, default=0, help="Steps between validations (0: each epoch).")
@click.option("--patience", type=int, default=0, show_default=True,
              help="Early stopping: end the run after this many validations in a row without a "
                   "better accuracy (the best checkpoint is kept; --steps/--epochs stay the cap "
                   "and the schedule's length). 0: never.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--pack", is_flag=True,
              help="A language model's text rows: concatenated and cut into full-length rows (no padding).")
@click.option("--set", "alast_settings", multiple=True, metavar="KEY=VALUE",
              help="ALaST option: token_budget, rule (relative|paper), alpha, n_train, b_min, selection, ...")
@click.option("--ram-cap", default=None, help="Peak RSS limit, e.g. 600MB or 1.5GiB.")
@click.option("--energy-cap", default=None, help="Energy budget for the run, e.g. 5kJ.")
@click.option("--power-cap", default=None, help="Mean power limit, e.g. 7W (met by pausing).")
@click.option("--device", "device_name", default=None,
              help="Device profile (edgetune devices); default: detected.")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default=None,
              help="ONNX Runtime execution provider (default: the device profile's accelerator "
                   "where this onnxruntime offers it, else cpu).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(bundle, data, val, val_split, steps, epochs, batch_size, pad_multiple, lr, warmup, schedule,
          mode, out, resume, seed, threads, checkpoint_every, eval_every, patience, text_column,
          label_column, pack, alast_settings, ram_cap, energy_cap, power_cap, device_name, provider, quiet):
    """Fine-tune BUNDLE on local data with ONNX Runtime (no torch)."""
    from pathlib import Path

    from edgetune.bundle import Bundle
    from edgetune.caps.limits import Caps
    from edgetune.caps.units import format_joules
    from edgetune.config import from_strings
    from edgetune.devices import detect_device, get_device
    from edgetune.schedule.alast import AlastConfig
    from edgetune.train import RunFolder, TrainConfig, Trainer, load_data
    from edgetune.train.modes import resolve

    caps = Caps.parse(ram=ram_cap, energy=energy_cap, power=power_cap)
    device = get_device(device_name) if device_name else detect_device()
    b = Bundle.open(bundle)
    mode, provider = resolve(schedule, b.modes, mode=mode or "", provider=provider or "",
                             accelerator=device.accelerator, ram_capped=caps.ram_bytes is not None)
    rate = _lr(lr)
    cfg = TrainConfig(steps=steps, epochs=epochs, batch_size=batch_size,
                      lr=1e-3 if rate is None else rate, lr_auto=rate is None, warmup=warmup,
                      schedule=schedule, mode=mode, provider=provider, seed=seed, threads=threads,
                      checkpoint_every=checkpoint_every, eval_every=eval_every, patience=patience,
                      val_split=val_split,
                      pad_multiple=pad_multiple,
                      alast=from_strings(AlastConfig, alast_settings))
    b.mode_dir(cfg.mode)  # a clear error before data loading if the mode is missing
    run = Path(out) if out else Path("runs") / b.path.resolve().name
    folder = RunFolder(run)  # these refusals again in Trainer; here before the data loads
    if resume:
        folder.require_run()
    else:
        folder.require_fresh()
    folder.check_free()
    train_set = load_data(b, data, None, text_column, label_column, pack)
    labels = getattr(train_set, "label_names", None)
    val_set = load_data(b, val, labels, text_column, label_column) if val else None
    for ds in (train_set, val_set):
        _say_notes(ds)
    trainer = Trainer(b, train_set, val_set, cfg, out=run, progress=not quiet, resume=resume,
                      caps=caps, device=device)
    held = trainer.held_out
    if "examples" in held:
        click.echo(f"validating on {held['examples']} of {held['of']} --data examples held out "
                   f"(--val-split {held['fraction']:g}; never trained on)", err=True)
    elif schedule == "alast" and "why" in held:
        click.echo(f"note: {held['why']}: inference tokens follow the rule for "
                   f"{b.inputs.get('kind')} inputs", err=True)
    if resume and trainer.step:
        click.echo(f"resuming {run} at step {trainer.step}/{trainer.total_steps}", err=True)
    elif resume:
        click.echo(f"resuming {run}: no checkpoint yet (the run stopped before its first one); "
                   "starting at step 0", err=True)
    result = trainer.fit()
    line = (f"{run}: {result.steps} steps, loss {result.final_loss:.4f}, "
            f"{result.seconds_per_step:.3f} s/step, peak RSS {result.peak_rss_mb:.0f} MB, "
            f"{format_joules(result.energy_j)}")
    if result.best_accuracy is not None:
        line += f", best val {'token ' if b.is_lm else ''}accuracy {result.best_accuracy:.4f}"
        if result.inference is not None and result.inference.val_accuracy is not None:
            line += " (at the budgets)" if result.inference.tokens == "trained" else " (every token)"
    if trainer.lr_pick is not None:
        line += f", lr {trainer.config.lr:.3g} (auto: {trainer.lr_pick['rule']})"
    click.echo(line)
    if result.inference is not None and result.inference.budgets is not None:
        from edgetune.train.inference_tokens import describe

        click.echo(describe(result.inference, int(b.manifest["tokens"])) +
                   " (eval and merge follow this; --tokens all|trained to override)")
    if result.stopped:
        click.echo(f"stopped early: {result.stopped}", err=True)


@main.command()
@click.argument("source", type=click.Path())
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="0: greedy (the most likely token); else sampling from softmax(logits / T).")
@click.option("--top-p", type=float, default=1.0, show_default=True,
              help="Sample from the smallest set of tokens whose probability reaches this.")
@click.option("--seed", type=int, default=0, show_default=True, help="The sampling's seed.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which checkpoint of a run.")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(),
              help="An .onnx_adapter (edgetune merge) to apply over SOURCE's base decoder; repeatable.")
@click.option("--threads", type=int, default=0)
def generate(source, prompt, max_new_tokens, temperature, top_p, seed, checkpoint, adapters, threads):
    """Continue --prompt with a language model: a run folder (its checkpoint), a merged folder
    (edgetune merge) or a bundle (its initial weights); with --adapter, SOURCE's base decoder
    with LoRA adapters applied by onnxruntime. Streams the text to stdout."""
    import tempfile

    from tokenizers import Tokenizer

    from edgetune.generate import Generator, Sampling, open_source, stream_text

    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    with tempfile.TemporaryDirectory(prefix="edgetune-generate-") as work:
        src = open_source(source, checkpoint, work, base=bool(adapters))
        tok = Tokenizer.from_file(str(src.tokenizer))
        ids = tok.encode(prompt).ids
        gen = Generator(src.graph, src.spec, src.initial_past, threads, adapters)
        click.echo(prompt, nl=False)
        for piece in stream_text(tok, ids, gen.ids(ids, sampling)):
            click.echo(piece, nl=False)
        click.echo()


@main.command("eval")
@click.argument("run_or_bundle", type=click.Path())
@click.option("--data", required=True, type=click.Path())
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which checkpoint of a run (best falls back to last).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--threads", type=int, default=0)
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--tokens", type=click.Choice(TOKEN_REQUESTS), default="run", show_default=True,
              help="Tokens kept: the run's choice from its validation (ALaST runs), every token, or "
                   "the budgets it trained with.")
@click.option("--round", "server_round", type=int, default=None,
              help="A fleet folder's round (default: the last aggregated one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def eval_cmd(run_or_bundle, data, checkpoint, batch_size, threads, text_column, label_column, tokens,
             server_round, as_json):
    """Loss and accuracy (a language model's: perplexity) of a run's checkpoint, a fleet's
    aggregate (edgetune fleet), a bundle's initial weights, or a merged folder's model (its
    inference.onnx, or the .onnx file named, e.g. RUN/merged/inference.int8.onnx) on --data."""
    import json

    from edgetune.fleet.folder import FleetFolder
    from edgetune.train.evaluate import evaluate_path

    if FleetFolder.holds_one(run_or_bundle):
        from edgetune.fleet.result import evaluate_fleet

        res = evaluate_fleet(run_or_bundle, data, batch_size=batch_size, threads=threads,
                             text_column=text_column, label_column=label_column, tokens=tokens,
                             server_round=server_round)
    else:
        if server_round is not None:
            raise UsageError(f"--round {server_round}: {run_or_bundle} is not a fleet folder")
        res = evaluate_path(run_or_bundle, data, checkpoint=checkpoint, batch_size=batch_size,
                            threads=threads, text_column=text_column, label_column=label_column,
                            tokens=tokens)
    if as_json:
        click.echo(json.dumps(res))
    else:
        for note in res.get("data_notes", ()):
            click.echo(f"note: {data}: {note}", err=True)
        kept = "every token" if res["keep"] is None else f"keep {res['keep']}"
        if "perplexity" in res:  # a language model: per target token
            click.echo(f"{res['source']}: perplexity {res['perplexity']:.2f}, loss {res['loss']:.4f}, "
                       f"token accuracy {res['accuracy']:.4f} on {res['count']} target tokens")
        else:
            click.echo(f"{res['source']}: accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f} "
                       f"on {res['count']} samples ({kept})")
        if res.get("choice", {}).get("budgets") is not None:  # an ALaST run: which tokens, why
            click.echo(f"tokens: {res['tokens']} ({res['choice']['reason']})")


@main.command()
@click.argument("merged", type=click.Path())
@click.argument("texts", nargs=-1, required=True)
@click.option("--threads", type=int, default=0)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def predict(merged, texts, threads, as_json):
    """Classify TEXTS with a merged text model (edgetune merge): MERGED is the merged folder, or
    an .onnx file in it (e.g. RUN/merged/inference.int8.onnx). Plain onnxruntime, no bundle."""
    import json

    from edgetune.merged_folder import MergedModel, holds_one

    if not holds_one(merged):
        raise UsageError(f"{merged}: not a merged folder (edgetune merge writes one)")
    out = MergedModel(merged, threads).classify(list(texts))
    if as_json:
        click.echo(json.dumps(out))
        return
    for text, r in zip(texts, out):
        click.echo(f"{r['label']} ({r['probability']:.1%}): {text}")


@main.command()
@click.argument("run", type=click.Path())
@click.option("--checkpoint", default="best", show_default=True,
              help="best (falls back to last), last, or a checkpoint folder name.")
@click.option("--out", type=click.Path(), default=None, help="Output folder (default RUN/merged).")
@click.option("--bundle", type=click.Path(), default=None, help="The bundle, if it moved since training.")
@click.option("--tokens", type=click.Choice(TOKEN_REQUESTS), default="run", show_default=True,
              help="Tokens kept: the run's choice from its validation (ALaST runs), every token, or "
                   "the budgets it trained with.")
@click.option("--round", "server_round", type=int, default=None,
              help="A fleet folder's round (default: the last aggregated one).")
@click.option("--int8", is_flag=True,
              help="Also write inference.int8.onnx: int8 weights (a bundle exported with --base int8).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def merge(run, checkpoint, out, bundle, overwrite, tokens, server_round, int8):
    """Write RUN's inference.onnx (plain onnxruntime) and its adapter in Hugging Face PEFT format;
    LoRA, IA3 and Propulsion are folded into the weights. RUN may be a fleet folder."""
    from edgetune.fleet.folder import FleetFolder
    from edgetune.merge import merge_run

    say = lambda msg: click.echo(msg, err=True)  # noqa: E731
    if FleetFolder.holds_one(run):
        from edgetune.fleet.result import merge_fleet

        path = merge_fleet(run, out=out, overwrite=overwrite, bundle=bundle, log=say, tokens=tokens,
                           server_round=server_round, int8=int8)
    else:
        if server_round is not None:
            raise UsageError(f"--round {server_round}: {run} is not a fleet folder")
        path = merge_run(run, checkpoint=checkpoint, out=out, overwrite=overwrite, bundle=bundle,
                         tokens=tokens, log=say, int8=int8)
    click.echo(path)


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--device", "device_name", default=None, help="Device profile (default: detected).")
@click.option("--ram-cap", default=None, help="e.g. 600MB")
@click.option("--energy-cap", default=None, help="e.g. 5kJ (per run)")
@click.option("--power-cap", default=None, help="e.g. 7W")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--steps", type=int, default=1, show_default=True, help="Run length (spreads --energy-cap).")
@click.option("--schedule", type=click.Choice(["static", "alast"]), default="alast", show_default=True)
@click.option("--lr", default=None, help="'auto': show the learning-rate range test train would run first.")
@click.option("--json", "as_json", is_flag=True)
def plan(bundle, device_name, ram_cap, energy_cap, power_cap, batch_size, steps, schedule, lr, as_json):
    """Dry run: the plan the scheduler would start with under the caps, with predicted memory,
    FLOPs and energy per step. Nothing is trained."""
    import json
    from dataclasses import asdict

    from edgetune.bundle import Bundle
    from edgetune.caps.dry_run import format_report, plan_report
    from edgetune.caps.limits import Caps
    from edgetune.devices import detect_device, get_device
    from edgetune.train.lr_range import RangeTest, Trials

    b = Bundle.open(bundle, verify=False)
    device = get_device(device_name) if device_name else detect_device()
    caps = Caps.parse(ram=ram_cap, energy=energy_cap, power=power_cap)
    report = plan_report(b.manifest, device, caps, batch_size, schedule=schedule, steps=steps)
    rate = _lr(lr) if lr is not None else None
    auto = lr is not None and rate is None
    if rate is not None:
        report["lr"] = rate
    if auto:
        report["lr_auto"] = {**asdict(RangeTest()), "trials": asdict(Trials())}
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    for line in format_report(report):
        click.echo(line)
    if auto:
        t, tr = RangeTest(), Trials()
        click.echo(f"learning rate: auto: a range test of {t.steps} steps first (lr {t.lo:g} to "
                   f"{t.hi:g}, geometric; pick: the smoothed loss's minimum / {t.divisor:g}), then "
                   f"{len(tr.first())} to {2 * tr.reach + 1} trials of up to {tr.steps} steps from "
                   f"the same start, at the pick × {tr.ratio:.3g}^k for k = 1, 0, -1 and on past the "
                   f"best while it is the highest or lowest tried (|k| <= {tr.reach}; the lowest "
                   "held-out loss wins), at this plan and under these caps; their steps count "
                   "against --energy-cap")


@main.command()
def devices() -> None:
    """List the device profiles and detect this machine (and its sensors)."""
    from edgetune.devices import detect, list_devices
    from edgetune.sensors.factory import probe_sensors

    found = detect()
    rows = []
    for d in list_devices():
        mark = "*" if d.name == found.profile.name else ""
        d = found.profile if mark else d  # this machine's row: its own RAM and cores
        rows.append((mark + d.name, f"{round(d.ram_bytes / 2**30, 1):g} GiB", str(d.cores),
                     f"{d.peak_gflops:.0f}", f"{d.idle_watts:g}-{d.active_watts:g} W", ",".join(d.sensors)))
    _table(("device", "RAM", "cores", "GFLOP/s", "power", "sensors"), rows)
    click.echo(f"\nthis machine: {found.profile.name} ({found.reason})")
    if found.machine:
        click.echo(f"  {found.machine}; plans and caps use them")
    for s in probe_sensors(found.profile):
        click.echo(f"  energy sensor {s.name}: {'yes' if s.available else 'no'} - {s.detail}")
    from edgetune.runtime.ort_build import describe

    click.echo(f"  {describe()}")


main.add_command(fleet_group, "fleet")


def _show(v) -> str:
    if isinstance(v, tuple):
        return ",".join(v) if v else "(model default)"
    return str(v)


def _table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
