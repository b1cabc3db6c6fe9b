"""``train_sae``: a training run from settings to a SAELens-format folder, under posfeat's output
policy.

While it trains, checkpoints live in ``<out>.partial`` (kept when a run is interrupted, so that
``resume=True`` continues it; removed once the SAE is in place). The finished SAE is written into
a temporary folder and moved into place; an existing ``out`` is replaced only with ``force=True``
and only when posfeat wrote it.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.archs import architecture, either
from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, arg
from ..core.memory import check_fits
from ..core.sae import SAE, SAEMeta
from ..core.tensors import require_data
from ..io.checkpoints import layer0_hook, load_embeddings
from ..io.output import Output
from ..io.ownership import PARTIAL, OutputKind, foreign_entries
from ..io.policy import check_inputs, resolve_target
from ..io.sae_folders import (
    CFG_FILE,
    SPARSITY_FILE,
    WEIGHTS_FILE,
    read_sae_folder,
    write_sae_folder,
)
from ..io.safetensors_io import write_tensors
from ..io.tokens import TOKEN_WEIGHTS_FILE, token_weights_arg
from ..io.writes import remove
from .config import ARCHS, TrainConfig, train_config
from .loop import (
    CHECKPOINT,
    CHECKPOINT_META,
    LOG_COLUMNS,
    LOG_FILE,
    Sampler,
    Scaling,
    Trainer,
    checkpoint_state,
    made_with,
)
from .model import TrainingSAE

log = logging.getLogger("posfeat")

_SAE_FILES = (CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE, LOG_FILE, TOKEN_WEIGHTS_FILE)
#: A trained SAE's folder (``posfeat train``).
TRAIN = OutputKind(
    "train",
    _SAE_FILES,
    legacy=(
        (CFG_FILE, WEIGHTS_FILE),
        (LOG_FILE, TOKEN_WEIGHTS_FILE, SPARSITY_FILE),
        (CFG_FILE, "posfeat_training"),
    ),
)
#: A training's work folder ``<out>.partial`` (its checkpoint; rewritten as the run goes).
TRAIN_CHECKPOINT = OutputKind(
    "train-checkpoint",
    (CHECKPOINT, CHECKPOINT_META),
    grows=(CHECKPOINT, CHECKPOINT_META),
    legacy=((CHECKPOINT, CHECKPOINT_META), (), None),
)


def train_kinds(callback: Any = None) -> tuple[OutputKind, OutputKind]:
    """The two kinds above, with the files a callback writes (its ``file_names``: beside the SAE and
    the checkpoint)."""
    extra = tuple(getattr(callback, "file_names", ()))
    return (
        dataclasses.replace(TRAIN, files=TRAIN.files + extra),
        dataclasses.replace(
            TRAIN_CHECKPOINT,
            files=TRAIN_CHECKPOINT.files + extra,
            grows=TRAIN_CHECKPOINT.grows + extra,
        ),
    )


@dataclass
class TrainResult:
    """The trained SAE, its log rows, and where it was written (if anywhere)."""

    sae: SAE
    log: list[dict[str, float]] = field(default_factory=list)
    out: Path | None = None


def _init_sae(init: Any, emb: Embeddings, values: dict[str, Any]) -> SAE | None:
    """The SAE to fine-tune; its width and architecture win over the settings."""
    if init is None:
        return None
    sae = init if isinstance(init, SAE) else read_sae_folder(init, allow_any_hook=True)
    if not sae.arch.trainable:
        raise PosfeatError(
            f"{arg('init')} points at a {sae.arch.title} SAE; posfeat trains "
            f"{either([architecture(a).title for a in ARCHS], 'and')} SAEs only."
        )
    if sae.d_in != emb.d_model:
        raise PosfeatError(
            f"{arg('init')} SAE reads d_in {sae.d_in} but {emb.name} has d_model {emb.d_model}; "
            "fine-tune an SAE of this model."
        )
    if values.get("arch", ARCHS[0]) == ARCHS[0]:  # the default: the SAE's own architecture
        values.update(arch=sae.architecture, **sae.arch.params())
    values["d_sae"] = sae.d_sae
    return sae.to("cpu")


def embeddings_record(emb: Embeddings, model_name: str | None) -> dict[str, Any]:
    """Where the training embeddings came from, for cfg.json: never a guessed hub name.

    ``load_as`` is set by :func:`posfeat.load_embeddings` for a source it can load again (a hub id,
    a folder, ``minilm``, a named model object); embeddings built in memory, or an unnamed model
    object, have none, and the SAE then names no model (``posfeat analyze --sae`` asks for
    ``--model``)."""
    load_as = model_name or emb.info.get("load_as")
    return {
        "source": str(emb.info.get("source") or f"Embeddings built in memory (name {emb.name!r})"),
        "name": emb.name,
        "load_as": load_as or None,
        "loadable": bool(load_as),
        "centered": bool(emb.centered),
    }


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def training_bytes(d_model: int, d_sae: int, batch: int) -> int:
    """Memory training takes, estimated before anything is allocated: the weights with their
    gradients and Adam's two moments (float32), and one batch's inputs, pre-activations,
    activations, reconstruction and their gradients."""
    params = 2 * d_model * d_sae + d_sae + d_model
    return 4 * (4 * params + batch * (4 * d_model + 4 * d_sae))


def _partial_dir(
    output: Output, work: OutputKind, resume: bool, resume_or_start: bool, force: bool
) -> Path:
    """``<out>.partial``, prepared for a new run or for resuming one (see module docstring); the run
    holds the lock."""
    target = output.claim()
    partial = target.with_name(target.name + PARTIAL)
    has = (partial / CHECKPOINT).is_file()
    if resume and not has and not resume_or_start:
        raise PosfeatError(
            f"There is no checkpoint in {partial} to resume; run without {arg('resume', True)} "
            f"(or with {arg('resume_or_start', True)})."
        )
    discard = has and not (resume or resume_or_start)
    if discard and not force:
        raise PosfeatError(
            f"{partial} holds the checkpoint of an interrupted run; pass {arg('resume', True)} to "
            "continue it, or "
            f"{arg('force', True)} to discard it and start again."
        )
    return output.work_folder(work, fresh=discard)


def _finished_run(
    output: Output, cfg: TrainConfig, kinds: tuple[OutputKind, OutputKind]
) -> TrainResult | None:
    """The result of a run with these settings that finished but was killed before it removed
    ``<out>.partial`` (its SAE is in ``out``, its checkpoint at the last step): resuming it has
    nothing left to do but that removal. None otherwise; an ``out`` that is one of the run's inputs
    is refused as by :func:`posfeat.io.policy.check_target`."""
    target = resolve_target(output.out)
    check_inputs(target, os.fspath(output.out or ""), output.inputs)
    partial = target.with_name(target.name + PARTIAL)
    if not (partial / CHECKPOINT).is_file() or not target.is_dir():
        return None
    if foreign_entries(target, [kinds[0]]) != ("train", []):
        return None
    if foreign_entries(partial, [kinds[1]]) != (
        "train-checkpoint",
        [],
    ):  # anything else is not posfeat's to remove
        return None
    try:
        meta = checkpoint_state(partial)
    except PosfeatError:
        return None
    if meta["step"] < cfg.steps or not made_with(meta, cfg):
        return None
    with Output(
        output.out, kinds[0], force=True, inputs=output.inputs
    ):  # the lock, for the removal
        remove(partial)
        log.warning(
            "%s holds the SAE of this run, finished at step %d; removed the checkpoint folder it "
            "left, %s",
            target,
            meta["step"],
            partial.name,
        )
        sae = read_sae_folder(target)
    return TrainResult(sae, list(meta.get("log", [])), target)


def _write(
    sae: SAE,
    output: Output,
    rows: list[dict[str, float]],
    token_weights: torch.Tensor | None,
    extra: dict[str, Any],
    files: dict[str, str],
) -> None:
    with output.staging() as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
        write_sae_folder(sae, tmp, extra)
        with open(tmp / LOG_FILE, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if token_weights is not None:
            write_tensors(tmp / TOKEN_WEIGHTS_FILE, {"weights": token_weights.float()})


def train_sae(
    emb: Any,
    config: TrainConfig | None = None,
    *,
    token_weights: Any = None,
    init: Any = None,
    out: str | os.PathLike[str] | Output | None = None,
    resume: bool = False,
    resume_or_start: bool = False,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
    model_name: str | None = None,
    stop_after: int | None = None,
    callback: Any = None,
    **settings: Any,
) -> TrainResult:
    """Train an SAE on the layer-0 grid of ``emb``, on the embeddings' device (see
    ``posfeat.training.loop``).

    Args:
        emb: embeddings; inputs are ``W_E[t] + W_pos[p]`` with ``p < context``. Anything
            :func:`posfeat.load_embeddings` accepts (a name, a folder, a TransformerLens or
            transformers model object); the SAE records where they came from
            (``posfeat_training.embeddings`` in cfg.json) and names a model only when the source has
            a name to load it by.
        config: a :class:`TrainConfig`, or its fields as keywords (``d_sae=``, ``context=``,
            ``l1=``, ...).
        token_weights: ``[d_vocab]`` non-negative weights (tensor or safetensors file), or None for
            uniform tokens.
        init: an SAE (or folder) to fine-tune; its width and architecture win.
        out: write a SAELens-format folder here (cfg.json, sae_weights.safetensors,
            training_log.csv, token_weights.safetensors when given); checkpoints go to
            ``<out>.partial``.
        resume: continue from the checkpoint in ``<out>.partial`` (an error when there is none).
        resume_or_start: continue when there is a checkpoint, else start.
        force: replace an existing ``out`` written by posfeat (or discard a checkpoint left there).
        stop_after: stop (as if interrupted) after this many steps; for tests of resumption.
        callback: called with the :class:`Trainer` after every step; a ``files`` attribute (name ->
            text) is written into ``out`` beside the SAE.
    """
    emb = load_embeddings(emb)
    require_data(emb.device, "The embeddings")
    if out is not None and not isinstance(out, Output):
        resolve_target(out)  # a wrong type or an impossible name, named before any work
    values = config.as_dict() if config is not None else dict(settings)
    if config is not None and settings:
        values.update(settings)
    kinds = train_kinds(callback)
    output: Output | None = None
    partial: Path | None = None
    try:
        init_sae = _init_sae(init, emb, values)
        cfg = train_config(**values)
        cfg.validate(emb.n_ctx, emb.name)
        check_fits(
            training_bytes(emb.d_model, cfg.d_sae, cfg.batch),
            f"Training an SAE of width {cfg.d_sae} on batches of {cfg.batch}",
            f"choose a smaller {arg('d_sae')} or {arg('batch')}",
            emb.device,
        )
        weights = token_weights_arg(token_weights, emb.d_vocab)
        inputs = [
            (arg("init"), init if isinstance(init, (str, os.PathLike)) else None),
            (
                arg("token_weights"),
                token_weights if isinstance(token_weights, (str, os.PathLike)) else None,
            ),
        ]
        if out is not None:
            output = Output.of(out, kinds[0], force=force, command=command, inputs=inputs)
        if output is not None and (resume or resume_or_start) and not force:
            done = _finished_run(output, cfg, kinds)
            if done is not None:
                return done
        if output is not None:
            partial = _partial_dir(output, kinds[1], resume, resume_or_start, force)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        sampler = Sampler(emb, cfg.context, weights, gen)
        scaling = Scaling.measure(emb, sampler, weights)
        model = TrainingSAE(emb.d_model, cfg.d_sae, architecture(cfg.arch).from_settings(cfg), gen)
        if init_sae is not None:
            model.load_sae(init_sae, scaling.scale)
        else:
            with torch.no_grad():
                model.b_dec.copy_(scaling.mean.cpu())
        trainer = Trainer(model.to(emb.device), sampler, cfg, scaling, partial, progress, callback)
        if partial is not None and trainer.has_checkpoint():
            trainer.resume()
        trainer.fit(stop_after)
        result = _finish(
            emb,
            cfg,
            trainer,
            init_sae,
            init,
            weights,
            token_weights,
            output,
            partial,
            command,
            model_name,
        )
    except BaseException:
        if output is not None:
            _after_failure(output, partial, kinds[1])
        raise
    if output is not None:
        output.release()
    return result


def _after_failure(output: Output, partial: Path | None, work: OutputKind) -> None:
    """Tidy up after a failed or interrupted run: the work folder goes when it holds nothing to
    resume, and the lock is released (folders made for the output go again, unless they hold the
    checkpoint)."""
    if partial is not None and output.committed:
        remove(
            partial
        )  # a signal right after the SAE went into place: the checkpoints are not needed any more
    elif (
        partial is not None
        and not (partial / CHECKPOINT).exists()
        and foreign_entries(partial, [work]) == (work.name, [])
    ):
        remove(
            partial
        )  # nothing to resume in it (a failure before the first checkpoint): no empty work folder is left
    output.release(failed=True)


def _finish(
    emb: Embeddings,
    cfg: TrainConfig,
    trainer: Trainer,
    init_sae: SAE | None,
    init: Any,
    weights: torch.Tensor | None,
    token_weights: Any,
    output: Output | None,
    partial: Path | None,
    command: str | None,
    model_name: str | None,
) -> TrainResult:
    folded = trainer.model.fold(trainer.scaling.scale)
    bad = [
        name
        for name, value in folded.items()
        if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all())
    ]
    if bad:
        first = next((r["step"] for r in trainer.rows if not all(map(_finite, r.values()))), None)
        when = (
            f" (its log first shows a NaN or infinite value at step {first})"
            if first is not None
            else ""
        )
        raise PosfeatError(
            f"Training diverged: after {trainer.step_no} steps the weights ({', '.join(bad)}) hold "
            "NaN or infinite values"
            f"{when}; lower {arg('lr', cfg.lr)} or {arg('l1', cfg.l1)}, or raise "
            f"{arg('warmup', cfg.warmup)}."
        )
    target = output.claim() if output is not None else None
    command = output.command if output is not None and output.command is not None else command
    hook = init_sae.hook_name if init_sae is not None and init_sae.hook_name else layer0_hook(emb)
    record = {
        "command": command or "train_sae(...)",
        "seed": cfg.seed,
        "config": cfg.as_dict(),
        "input_scale": trainer.scaling.scale,
        "token_weights": Path(token_weights).name
        if isinstance(token_weights, (str, os.PathLike))
        else ("given" if weights is not None else "uniform"),
        "init": None if init is None else str(init if not isinstance(init, SAE) else init.name),
        "device": str(emb.device),
        "final": trainer.rows[-1] if trainer.rows else {},
        "embeddings": embeddings_record(emb, model_name),
    }
    name = model_name or emb.info.get("load_as") or None
    sae = SAE.from_arrays(
        folded["W_enc"],
        folded["W_dec"],
        folded["b_enc"],
        folded["b_dec"],
        **trainer.model.arch.params(),
        name=str(target) if target else f"trained d_sae={cfg.d_sae}",
        cfg={
            "model_name": name or "",
            "posfeat_training": record,
            "center_writing_weights": bool(emb.centered),
        },
        meta=SAEMeta(
            hook_name=hook,
            context_size=cfg.context,
            model_name=name,
            dataset="posfeat layer-0 grid",
            centered=bool(emb.centered),
        ),
    )
    if output is None or target is None:
        return TrainResult(sae, trainer.rows, None)
    extra = {
        "model_name": name or "",
        "center_writing_weights": bool(emb.centered),
        "posfeat_training": record,
    }
    files = dict(getattr(trainer.callback, "files", None) or {})
    _write(sae.to("cpu"), output, trainer.rows, weights, extra, files)
    remove(partial)
    sae.meta = dataclasses.replace(sae.meta, folder=str(target))
    return TrainResult(sae, trainer.rows, target)
