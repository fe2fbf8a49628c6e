"""``search()``: the one facade. It only wires: inputs checked -> the model and study prepared -> seeds
queued -> a backend runs the trials -> the result, with its files written.

Example:
    >>> from autoprune import search
    >>> from autoprune.demo import DigitsDataModule, pretrained_digits_cnn
    >>> result = search(pretrained_digits_cnn(), DigitsDataModule(), n_trials=2,
    ...                 out_dir=tmp_dir, seed=0)   # doctest: +SKIP
    >>> best = result.best()                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
import time
import uuid
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import lightning as L
from torch import nn

from autoprune import defaults
from autoprune.analyze import Analysis
from autoprune.backends import Backend, RayOptions, get_backend
from autoprune.backends.book import StudyBook
from autoprune.backends.samplers import check_sampler, make_sampler
from autoprune.backends.storage import check_storage_spec, make_storage
from autoprune.batchnorm import STUDY_ATTR as BN_STUDY_ATTR, check as check_bn, drift, resolve
from autoprune.errors import AutopruneInputError, StudyError
from autoprune.distill import Distillation, Teacher, as_distillation
from autoprune.dropout import STUDY_ATTR as DROPOUT_STUDY_ATTR
from autoprune.export import save_pruned
from autoprune.finetune import check_accelerator, check_precision, evaluate, quiet
from autoprune.defaults import is_hf_spec
from autoprune.hf import folder_setup
from autoprune.imagedata import image_setup, names_images
from autoprune.loading import BEST_DIR, candidate_loader, claim_artifacts, default_artifacts, default_storage
from autoprune.measure import HardwareProfile
from autoprune.modelio import ModelIO
from autoprune.objective import TrialContext, TrialJob
from autoprune.probe import PROBE_ATTR, study_probe
from autoprune.policy import Policy
from autoprune.quantize import deployed_model
from autoprune.recovery import Recovery, check_reserve, recover as recover_front, trial_timeout
from autoprune.prepare import latency_budget, prepare_model, prepare_study
from autoprune.report import write_files
from autoprune.result import SearchResult, TrialRecord, pareto_front
from autoprune.runtimes import available_runtimes, get_runtime
from autoprune.space import SearchSpace, load_space
from autoprune.study import StudyMeta, metric_name, model_fingerprint

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

OnTrialEnd = Callable[[TrialRecord, SearchResult], None]


def check_arguments(*, n_trials: Any = defaults.N_TRIALS, budget_ms: Any = None, budget_mb: Any = None,
                    budget_ratio: Any = None, timeout: Any = None, time_budget: Any = None, study_name: Any = None,
                    heartbeat_interval: Any = defaults.HEARTBEAT_INTERVAL, sampler: Any = defaults.SAMPLER,
                    backend: Any = defaults.BACKEND, seed: Any = None, storage: Any = None,
                    out_dir: Any = None, artifacts_dir: Any = None) -> None:
    """Refuse arguments of :func:`search` that cannot work, before anything is loaded or created (the CLI
    calls it first too). Raises the package's input errors, naming the argument."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise AutopruneInputError(f"n_trials (--trials) must be a positive integer, got {n_trials!r}")
    for name, value in (("budget_ms", budget_ms), ("budget_mb", budget_mb), ("budget_ratio", budget_ratio),
                        ("timeout", timeout), ("time_budget", time_budget)):
        if value is not None and (isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0
                                                                  and math.isfinite(value))):
            raise AutopruneInputError(f"{name} (--{name.replace('_', '-')}) must be a positive number, got {value!r}")
    if timeout is not None and time_budget is not None:
        raise AutopruneInputError("give timeout (--timeout, the trials' time) or time_budget (--time-budget, the "
                                  "whole search's), not both")
    if budget_ms is not None and budget_ratio is not None:
        raise AutopruneInputError("give the latency budget once: budget_ms (--budget-ms) or budget_ratio "
                                  "(--budget-ratio), not both")
    if isinstance(heartbeat_interval, bool) or not isinstance(heartbeat_interval, int) or heartbeat_interval < 1:
        raise AutopruneInputError(f"heartbeat_interval must be a positive integer, got {heartbeat_interval!r}")
    if study_name is not None and not re.fullmatch(r"[\w.\-]+", str(study_name)):
        raise AutopruneInputError(f"study_name {study_name!r} may use letters, digits, '.', '_' and '-' only")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise AutopruneInputError(f"seed (--seed) must be an integer from 0 to 2**32 - 1, got {seed!r}")
    if storage is not None and not isinstance(storage, str):
        raise AutopruneInputError(f"storage (--storage) must be a URL or a journal file path (a string), got "
                                  f"{type(storage).__name__}")
    if storage is not None:
        check_storage_spec(storage)
    for name, value in (("out_dir", out_dir), ("artifacts_dir", artifacts_dir)):
        check_not_a_file(value, f"{name} (--{name.removesuffix('_dir')})")
    check_sampler(sampler)
    get_backend(backend)


def check_not_a_file(path: str | Path | None, what: str) -> None:
    """Refuse a directory argument that names an existing file, naming the argument (``what``)."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise AutopruneInputError(f"{what} {path} is a file, not a directory: give a directory (it is created if "
                                  "missing)")


def make_directory(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) or say why it cannot be, as an input error naming the argument."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AutopruneInputError(f"{what} {path} cannot be created ({exc.strerror or type(exc).__name__}): give a "
                                  "directory you can write to") from None


def check_setup(*, space: str | Path | SearchSpace | Mapping[str, Any] = defaults.SPACE,
                profile: HardwareProfile | None = None, precision: str = defaults.PRECISION, accelerator: Any = "cpu",
                fidelity: bool | None = None, metric: Any = None, io: Any = None, bn: str | None = None,
                reconstruct: bool | None = None) -> tuple[SearchSpace, HardwareProfile]:
    """The space (with multi-fidelity as asked) and the profile a search runs under, once everything about them
    that cannot work here is refused: a device or runtime missing, int8 outside ONNX Runtime, a precision the
    accelerator cannot run, an accelerator Lightning cannot use, rungs the fine-tune is too short for, an ``io``
    that is not a :class:`ModelIO`. Needs no model, so the CLI calls it before it loads (or trains) one."""
    if io is not None and not isinstance(io, ModelIO):
        raise AutopruneInputError(f"io must be a ModelIO (e.g. ModelIO(target='label')), got {type(io).__name__} "
                                  f"{io!r}")
    if fidelity is not None and not isinstance(fidelity, bool):
        raise AutopruneInputError(f"fidelity must be True, False or None, got {fidelity!r}")
    if bn is not None:
        check_bn(bn)
    if reconstruct is not None and not isinstance(reconstruct, bool):
        raise AutopruneInputError(f"reconstruct must be True, False or None (the space's), got {reconstruct!r}")
    the_space = load_space(space).with_fidelity(fidelity).with_options(bn=bn, reconstruct=reconstruct)
    profile = profile or HardwareProfile()
    profile.check_available()
    check_quantization(the_space, profile, metric)
    check_precision(precision, check_accelerator(accelerator))
    return the_space, profile


def resolve_bn(policy: str, prepared: Any, *, metric: Any) -> str:
    """The BatchNorm policy the trials use (``auto`` resolved by probing the dense model, see
    :mod:`autoprune.batchnorm`)."""
    return resolve(policy, prepared.base, lambda: drift(
        prepared.base, prepared.train_loader, lambda m: evaluate(m, prepared.val_loader, metric, io=prepared.io),
        io=prepared.io), metric=metric_name(metric))


def check_quantization(space: SearchSpace, profile: HardwareProfile, metric: Any) -> None:
    """A space that quantizes needs candidates timed in ONNX Runtime, where the int8 model runs, and a metric
    that can be computed on the int8 model's outputs (accuracy, or a callable)."""
    if not space.quantizes:
        return
    if not get_runtime(profile.runtime).capabilities.int8:
        able = [r for r in available_runtimes() if get_runtime(r).capabilities.int8]
        raise AutopruneInputError(f"the space quantizes (quantize: {space.quantize}), and the {profile.runtime} "
                                  f"runtime cannot time int8 models: use --runtime {' or '.join(able)} "
                                  f"(HardwareProfile(runtime={able[0]!r})), or leave quantize out of the space")
    if isinstance(metric, str):
        raise AutopruneInputError(f"metric {metric!r} is logged by a LightningModule's validation_step, which an int8 "
                                  "ONNX model cannot run: give a callable metric(model, val_loader) to quantize")


def check_distillation(distill: Distillation | bool | None, model: nn.Module) -> Distillation | None:
    """``distill`` as a :class:`Distillation` (or None); refused for a LightningModule, which fine-tunes with
    its own ``training_step``."""
    distillation = as_distillation(distill)
    if distillation is not None and isinstance(model, L.LightningModule):
        raise AutopruneInputError("distill= applies to plain nn.Modules, which autoprune fine-tunes; a "
                                  "LightningModule fine-tunes with its own training_step: distil there")
    return distillation


def search(
    model: nn.Module | str, data: Any, *, space: str | Path | SearchSpace | None = None, task: str | None = None,
    budget_ms: float | None = None, budget_mb: float | None = None, budget_ratio: float | None = None,
    n_trials: int = defaults.N_TRIALS,
    timeout: float | None = None, storage: str | None = None, study_name: str | None = None,
    sampler: str | BaseSampler = defaults.SAMPLER, metric: Callable[[nn.Module, Any], float] | str | None = None,
    loss: Callable[[Any, Any], Any] | None = None, profile: HardwareProfile | None = None,
    out_dir: str | Path | None = None, artifacts_dir: str | Path | None = None, seed: int | None = None,
    accelerator: str = "cpu", backend: str | Backend = defaults.BACKEND, ray: RayOptions | None = None,
    resume: bool = False, seed_policies: bool = True, heartbeat_interval: int = defaults.HEARTBEAT_INTERVAL,
    on_trial_end: OnTrialEnd | None = None, study_attrs: Mapping[str, Any] | None = None, io: ModelIO | None = None,
    distill: Distillation | bool | None = None, precision: str = defaults.PRECISION, fidelity: bool | None = None,
    analysis: Analysis | str | Path | None = None, bn: str | None = None, reconstruct: bool | None = None,
    recover: Recovery | None = None, time_budget: float | None = None,
) -> SearchResult:
    """Search pruning policies for ``model``; return the Pareto front of metric vs latency and size.

    Args:
        model: a trained ``nn.Module`` (fine-tuned with cross-entropy or ``loss``), a ``LightningModule`` (its
            own ``training_step``/``configure_optimizers`` fine-tune it), or ``"hf:DIR"``, a Hugging Face model
            folder loaded offline for ``task`` (:mod:`autoprune.hf`). Never modified: the search prunes copies.
        data: a ``LightningDataModule`` or a ``(train_loader, val_loader)`` pair; batches are ``(inputs,
            target)`` tuples or dicts of tensors (``labels`` the target), read through ``io``. With a model
            folder: an examples file (CSV, TSV, JSONL, JSON, text) or a :class:`~autoprune.textdata.TextData`.
            For a CNN: ``"images:DIR"``, a folder of class sub-folders or of unlabelled images, or an
            :class:`~autoprune.imagedata.ImageData` (:mod:`autoprune.imagedata`).
        space: a built-in space name (``default``, ``structured``, ``unstructured``, ``transformer``,
            ``compress``, ``pretrained``), a YAML path, a dict of the YAML's fields, or a
            :class:`~autoprune.space.SearchSpace`; None: ``transformer`` for a model folder, ``pretrained`` for
            an image folder, else ``default``.
        task: a model folder's task, ``sequence-classification`` or ``feature-extraction`` (None: the one its
            ``architectures`` name); it presets the metric, ``io`` and ``distill`` where they are not given.
        budget_ms, budget_mb: hard budgets on latency (under ``profile``) and dense checkpoint size.
        budget_ratio: the latency budget as a share of the dense model's latency (0.5: twice as fast), resolved
            against the study's own dense timing; instead of ``budget_ms``.
        n_trials: total trials of the study, over every worker (a resumed study runs only the missing ones).
        timeout: stop starting new trials after this many seconds.
        storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``) or a journal file path
            (``runs/study.log``); default ``sqlite:///<out_dir>/study.db``. Workers that pass the same
            storage and study name share one study.
        study_name: default ``"autoprune"``.
        sampler: ``auto`` (multi-objective TPE), ``tpe``, ``nsga2``, ``gp``, ``random``, or an Optuna
            ``BaseSampler`` object (see :mod:`autoprune.backends.samplers`).
        metric: higher is better; default top-1 accuracy; a callable ``metric(model, val_loader)``, or
            the name of a metric the LightningModule logs in ``validation_step``.
        loss: ``loss(output, target)`` for plain modules (default cross-entropy).
        profile: the :class:`~autoprune.measure.HardwareProfile` that defines latency.
        out_dir: the run directory (result files, default study); default ``runs/<study_name>``.
        artifacts_dir: where front candidates' weights go, reachable by every worker; default beside
            the study (``<dir of the storage file or out_dir>/candidates/<study_name>-<study id>``). A worker that
            joins an existing study uses the directory the study was created with unless given one.
        seed: seeds the sampler and the random pruning baselines.
        accelerator: where trials fine-tune (a Lightning accelerator name: ``cpu``, ``gpu``).
        precision: the fine-tune's Lightning precision: ``32-true``, or ``bf16-mixed`` / ``16-mixed`` autocast
            on a GPU (latency is measured under ``profile``, whatever the fine-tune's precision).
        backend: ``optuna`` (trials in this process), ``ray`` (Ray Tune trials), another registered
            name, or a :class:`~autoprune.backends.Backend` object.
        ray: options of the Ray backend (:class:`~autoprune.backends.RayOptions`).
        resume: require the study to exist already (re-running without it also resumes).
        seed_policies: start a new study with the dense model, uniform, sensitivity-scaled and shallow
            policies (see :mod:`autoprune.seeds`) before the sampler's own trials (``False`` for a pure
            sampler, e.g. the random-search baseline).
        heartbeat_interval: seconds between a running trial's heartbeats; a trial whose worker misses
            three is failed and queued again.
        on_trial_end: called after every trial with its record and the result so far (progress bars).
        study_attrs: attributes stored with a new study (the CLI records how to rebuild the model: see
            :class:`~autoprune.study.StudyMeta`).
        io: how batches split into the model's inputs and target, and which output the loss and metric
            see (:class:`~autoprune.modelio.ModelIO`; the defaults fit tuple and Hugging Face dict batches).
        distill: fine-tune every trial against the dense model's outputs too
            (:class:`~autoprune.distill.Distillation`, or ``True`` for its defaults); plain modules only.
        fidelity: multi-fidelity search (:mod:`autoprune.fidelity`): new policies are screened without
            fine-tuning and only each rung's non-dominated candidates go on to longer fine-tunes. ``None``
            does what the space's ``fidelity`` section says; ``False`` fine-tunes every trial fully;
            ``True`` uses the space's rungs, or screening, a third of the steps and all of them.
        analysis: an :class:`~autoprune.analyze.Analysis` (or its saved ``analysis.json``) of this model, space
            and profile: a new study's seeds take its sensitivity ranking and alignment instead of scanning
            again (refused, naming the difference, when it was made for another model, space or profile).
        bn: what trials' fine-tunes do to BatchNorm statistics: ``auto``, ``train``, ``freeze`` or ``adapt``
            (:mod:`autoprune.batchnorm`); None: the space's ``finetune.bn`` (``auto`` unless it says).
        reconstruct: refit the layers that read removed channels to the dense model's outputs after pruning
            (:mod:`autoprune.reconstruct`); None: the space's ``reconstruct`` (off unless it says).
        recover: when the trials are done, fine-tune a few front candidates much longer
            (:class:`~autoprune.recovery.Recovery`: steps, and how many, spread along the front); the front,
            files and ``best/`` then hold the recovered candidates.
        time_budget: seconds for the whole search, start-up, trials and recovery (instead of ``timeout``, the
            trials' alone): the trials stop early enough to leave the recovery its estimated time.

    Returns:
        A :class:`~autoprune.result.SearchResult` of the whole study; its files are written to ``out_dir``.
    """
    called = time.perf_counter()  # a time budget counts from here
    setup = None
    if is_hf_spec(model):  # a model folder and an examples file: the task presets what is not given
        setup = folder_setup(model, data, task=task)
        model = setup.model
    elif task is not None:
        raise AutopruneInputError("task= applies to a Hugging Face model folder (model='hf:DIR')")
    elif isinstance(model, nn.Module) and names_images(data):
        setup = image_setup(model, data)  # an image folder: its labels (or none) preset the metric
    if setup is not None:
        preset = setup.options()
        data, space, io = setup.data, space or setup.space, io or preset["io"]
        metric = preset["metric"] if metric is None else metric
        distill = preset["distill"] if distill is None else distill
        loss = preset.get("loss") if loss is None else loss
        study_attrs = {**setup.attrs(), **(study_attrs or {})}
    space = defaults.SPACE if space is None else space
    if not isinstance(model, nn.Module):
        raise AutopruneInputError(f"model must be a torch.nn.Module or 'hf:DIR', got {type(model).__name__}")
    if recover is not None and not isinstance(recover, Recovery):
        raise AutopruneInputError(f"recover must be a Recovery(steps=..., top=...), got {type(recover).__name__}")
    distillation = check_distillation(distill, model)
    check_arguments(n_trials=n_trials, budget_ms=budget_ms, budget_mb=budget_mb, budget_ratio=budget_ratio,
                    timeout=timeout, time_budget=time_budget, study_name=study_name,
                    heartbeat_interval=heartbeat_interval, sampler=sampler, backend=backend, seed=seed,
                    storage=storage, out_dir=out_dir, artifacts_dir=artifacts_dir)
    if isinstance(metric, str) and not isinstance(model, L.LightningModule):
        raise AutopruneInputError(f"metric {metric!r} names a metric a LightningModule logs in validation_step, and "
                                  f"the model is a plain {type(model).__name__}: give a callable "
                                  "metric(model, val_loader), or leave it out for accuracy")
    chosen = get_backend(backend, options=ray)
    the_space, profile = check_setup(space=space, profile=profile, precision=precision, accelerator=accelerator,
                                     fidelity=fidelity, metric=metric, io=io, bn=bn, reconstruct=reconstruct)
    with quiet():  # everything that can be refused is, before a directory or a study is created
        prepared = prepare_model(model, data, the_space, io)
        teacher = Teacher.of(prepared.base, prepared.io, distillation) if distillation else None
        head_start = None
        if analysis is not None:
            analysis = analysis if isinstance(analysis, Analysis) else Analysis.load(analysis)
            analysis.check_fits(prepared, the_space, profile, metric_name(metric))
            head_start = analysis.head_start()
    with chosen.connected(), quiet():  # connect fails fast (exit 2 in the CLI) when the engine does not answer
        name = study_name or defaults.STUDY_NAME
        out = Path(out_dir) if out_dir is not None else defaults.run_dir(name)
        make_directory(out, "out_dir (--out)")
        storage = storage or default_storage(out)
        store = make_storage(storage, heartbeat_interval=heartbeat_interval if chosen.heartbeats else None)
        if resume and not store.has_study(name):
            raise StudyError(f"--resume: there is no study {name!r} in {store.describe()}; start it without --resume")
        study_id = uuid.uuid4().hex[:12]  # kept only if this run creates the study
        meta = replace(StudyMeta.from_attrs(study_attrs or {}), metric=metric_name(metric), budget_ms=budget_ms,
                       budget_mb=budget_mb, budget_ratio=budget_ratio, n_trials=n_trials, profile=asdict(profile),
                       space_fingerprint=the_space.fingerprint(), study_id=study_id,
                       rungs=list(the_space.fidelity.steps) if the_space.fidelity else None,
                       spaces_but_rungs=the_space.with_fidelity(False).fingerprint(),
                       model_fingerprint=model_fingerprint(prepared.base),
                       artifacts=str(Path(artifacts_dir or default_artifacts(storage, out, name, study_id)).resolve()))
        book, reference = prepare_study(store, study_name=name, meta=meta, prepared=prepared, profile=profile,
                                        sampler=make_sampler(sampler, seed=seed, n_trials=n_trials))
        budget_ms = latency_budget(budget_ms=budget_ms, budget_ratio=budget_ratio, meta=book.meta,
                                   prepared=prepared, profile=profile)
        artifacts = Path(artifacts_dir or book.meta.artifacts or default_artifacts(storage, out, name))
        make_directory(artifacts, "artifacts_dir (--artifacts)")
        claim_artifacts(artifacts, book.meta, study_name=name, storage=storage)
        seeding = seed_policies and book.needs_seeds()
        bn_policy = the_space.finetune.bn
        if bn_policy == "auto":  # probed once, by the run that analyses the new study; its workers read it
            bn_policy = resolve_bn(bn_policy, prepared, metric=metric) if seeding else \
                book.study.user_attrs.get(BN_STUDY_ATTR, "train")
        if seeding:
            book.study.set_user_attr(BN_STUDY_ATTR, bn_policy)  # refine reads it too, and the dropout policy
            book.study.set_user_attr(DROPOUT_STUDY_ATTR, the_space.finetune.dropout)
        ctx = TrialContext(base_model=prepared.base, example_inputs=prepared.example_inputs, profile=profile,
                           train_loader=prepared.train_loader, val_loader=prepared.val_loader, loss=loss, metric=metric,
                           budget_ms=budget_ms, budget_mb=budget_mb, seed=seed or 0, artifacts_dir=artifacts,
                           reference=reference, accelerator=chosen.accelerator(accelerator), io=prepared.io,
                           distill=distillation, precision=precision, bn=bn_policy, reconstruct=the_space.reconstruct,
                           teacher=teacher)
        # once per study, with its start-up analysis: does the trials' recipe harm the dense model? (it times
        # the recovery a time budget keeps aside too)
        timed = time_budget is not None and recover is not None and PROBE_ATTR not in book.study.user_attrs
        probe = study_probe(book.study, ctx, prepared.resolved, run=seeding or timed, metric_name=meta.metric)
        if time_budget is not None:  # a recovery that fills the budget is refused before the seeds' analysis
            check_reserve(time_budget, recovery=recover, probe=probe)
        if seeding:
            seeds = prepared.seeds(metric=metric, loss=loss, profile=profile, reference=reference,
                                   head_start=head_start)
            book.enqueue(seeds.params, dense_metric=seeds.dense_metric)
        if time_budget is not None:
            timeout = trial_timeout(time_budget, spent=time.perf_counter() - called, recovery=recover, probe=probe)
        result = SearchResult(trials=book.records(), metric_name=meta.metric, budget_ms=budget_ms, budget_mb=budget_mb,
                              out_dir=out, study_name=name, session_trials=set(), meta=book.meta,
                              model_loader=candidate_loader(artifacts, prepared.base, study_id=book.meta.study_id))
        job = TrialJob(space=prepared.resolved, context=ctx, latencies=book.latencies,
                       front=lambda rung: [c.objectives() for c in pareto_front(result.trials, rung=rung)])
        _run_backend(chosen, book, job, result, n_trials=n_trials, timeout=timeout, on_trial_end=on_trial_end,
                     recovery=recover)
    drift = result.dense_drift(distilled=distillation is not None)
    if drift is not None:
        warnings.warn(drift)
    best = result.best()
    if best is not None and best.artifact_dir is not None:  # with its int8 model when its policy quantizes:
        policy, pruned = Policy.from_dict(best.policy), result.load_model(best)  # what the search scored and timed
        save_pruned(pruned, policy, out / BEST_DIR, example_inputs=prepared.example_inputs, base_model=prepared.base,
                    io=prepared.io, int8=deployed_model(pruned, policy, prepared.example_inputs,
                                                        train_loader=prepared.train_loader, io=prepared.io))
    return result


def _run_backend(backend: Backend, book: StudyBook, job: TrialJob, result: SearchResult, *, n_trials: int,
                 timeout: float | None, on_trial_end: OnTrialEnd | None, recovery: Recovery | None = None) -> None:
    """Run the study's missing trials, then the recovery of its front (if asked); keep ``result`` current after
    each one (every worker's trials: the front is the study's), and write its files when the backend
    returns, raises or is interrupted."""

    def record_trial(record: TrialRecord) -> None:
        result.trials = book.records()
        result.session_trials.add(record.number)
        if on_trial_end is not None:
            on_trial_end(record, result)

    started = time.perf_counter()
    try:
        backend.run(book, job, n_trials=n_trials, timeout=timeout, on_trial_end=record_trial, run_dir=result.out_dir)
        if recovery is not None:
            recover_front(book, job, result, recovery, on_trial_end=record_trial)
    finally:
        result.trials = book.records()
        result.wall_seconds = time.perf_counter() - started
        write_files(result, result.out_dir)
