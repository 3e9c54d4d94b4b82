"""The training loop: accelerate for devices, DDP and mixed precision; exact, atomic checkpoints.

One optimizer step = ``grad_accum`` micro-batches per process (no gradient sync until the last).
A checkpoint holds the trainable weights, optimizer, scheduler, every process's RNG states and the
data position, written to a temporary folder and renamed, so ``--resume`` continues exactly where
the last checkpoint left off (a killed run loses at most ``checkpoint_every`` steps).

DeepSpeed (``accelerate launch`` with a ``distributed_type: DEEPSPEED`` config) takes a separate path:
the engine owns gradient accumulation (its ``gradient_accumulation_steps`` is set from
``run.grad_accum``), loss scaling, clipping and the optimizer step; checkpoints hold the engine's
partitioned model and optimizer state (``accelerate.save_state``); ZeRO-3's partitioned parameters
are gathered before the adapter or a full model is written. That path is written against
accelerate's documented DeepSpeed behaviour and its small decisions are unit-tested, but it has
NOT been run end to end (deepspeed is not a shirg dependency and is not installed in CI).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from shirg.checkpoint import read_safetensors_file
from shirg.errors import CheckpointError, ConfigError
from shirg.io import honour_umask, replace_dir, write_dir, write_text
from shirg.limits import read_json_file
from shirg.model.adapter import load_model
from shirg.model.options import LAVIDA_MODES, VisualOptions
from shirg.train.adapter import merge_lora, save_adapter, write_lavida_checkpoint
from shirg.train.checkpoints import (
    CHECKPOINTS,
    ENGINE_STATE,
    METRICS,
    TRAINABLE_NAMES,
    checkpoint_dirs,
    rng_state,
    set_rng_state,
)
from shirg.train.config import TrainConfig
from shirg.train.data import PositionSampler, snap_resolution
from shirg.train.deepspeed import (  # noqa: F401 - grad_norm_value, loss_divisor: re-exported, used below
    configure_deepspeed,
    gathered,
    grad_norm_value,
    is_deepspeed,
    loss_divisor,
    zero_stage,
)
from shirg.train.lora import describe, make_trainable, parameter_groups
from shirg.train.objectives import OBJECTIVES
from shirg.train.plot import loss_curve
from shirg.train.resume_check import CONFIG_COPY, check_resume

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    micro_step: int = 0  # global micro-batches consumed (the data position)
    epoch: int = 0
    position: int = 0  # first sample position of the next micro-batch in its epoch's order
    samples: int = 0
    skipped_images: int = 0
    truncated_answers: int = 0
    losses: list[float] = field(default_factory=list)


def lr_lambda(cfg: TrainConfig, total_steps: int):
    o = cfg.optim
    warmup = o.warmup_steps if o.warmup_steps is not None else round((o.warmup_ratio or 0.0) * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if o.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if o.schedule == "cosine" else 1 - progress
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return factor


def _forget_single_process_precision(mixed_precision: str) -> None:
    """accelerate keeps one AcceleratorState per process and refuses another mixed precision; a
    single-process caller that trains twice (a notebook, the tests) with different precisions would
    get its ValueError. Reset the state then; a distributed launch is never reset."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if mixed_precision and state and state.get("_mixed_precision") not in (None, mixed_precision) and \
            int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def _use_cpu() -> bool:
    forced = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    return forced or not torch.cuda.is_available()


def _mixed_precision(cfg: TrainConfig) -> str | None:
    if cfg.run.mixed_precision != "auto":
        return cfg.run.mixed_precision
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # as the accelerate launch config says
    return "no" if _use_cpu() else "bf16"


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool | str = False, stop_after: int | None = None,
                 resume_with_changes: bool = False) -> None:
        self.cfg, self.resume, self.stop_after = cfg, resume, stop_after
        self.resume_with_changes = resume_with_changes
        self.out = Path(cfg.run.output_dir)

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        cfg = self.cfg
        if not cfg.model.path:
            raise ConfigError("model.path is empty; set it to a LaViDa checkpoint folder (--set model.path=DIR)")
        if not self.resume and checkpoint_dirs(self.out):
            raise ConfigError(f"{self.out} already holds checkpoints; pass --resume to continue, "
                              "or choose another run.output_dir")
        # cpu=True on machines without CUDA: processes started by torchrun (accelerate launch
        # --multi_gpu) then form a gloo group; accelerate's own --cpu launcher starts only one process.
        _forget_single_process_precision(_mixed_precision(cfg))
        self.acc = acc = Accelerator(
            cpu=_use_cpu(),
            mixed_precision=_mixed_precision(cfg),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.run.find_unused_parameters)],
        )
        self.deepspeed = is_deepspeed(acc.distributed_type)
        self.zero_stage = zero_stage(acc)
        if self.deepspeed:
            # DeepSpeed owns accumulation, clipping and the step; make its config match ours before prepare
            for msg in configure_deepspeed(acc.state.deepspeed_plugin.deepspeed_config, cfg, acc.num_processes):
                log.warning("%s", msg)
            acc.state.deepspeed_plugin.gradient_accumulation_steps = cfg.run.grad_accum
            acc.gradient_accumulation_steps = cfg.run.grad_accum
            log.warning("DeepSpeed ZeRO-%d: this path of the trainer has not been tested end to end",
                        self.zero_stage)
        set_seed(cfg.run.seed)
        modes = cfg.modes()
        resolutions = sorted({r for r in cfg.data.resolutions})
        for mode in modes:
            if mode in LAVIDA_MODES:
                VisualOptions().validate(mode)
                continue
            for r in resolutions:
                for k in cfg.data.budgets or [cfg.data.visual.k]:
                    replace(cfg.data.visual, resolution=snap_resolution(r, cfg.data.snap), k=k).validate(mode)
        # resolve_dtype (inside load_model) reads "auto" as bf16 on CUDA, fp32 elsewhere
        lavida = load_model(cfg.model.path, device=acc.device, dtype=cfg.model.dtype,
                            shirg_weights=cfg.model.shirg_weights)
        if cfg.run.gradient_checkpointing:
            lavida.model.gradient_checkpointing = True
            lavida.model.vision_tower.vision_model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        self.tm = tm = make_trainable(lavida, cfg)
        objective = OBJECTIVES[cfg.data.objective]()
        samples, self.dataset, module = objective.build(cfg, lavida, tm, acc.device, modes)
        self.collate = objective.collate
        self.trainable_names = [n for n, _ in tm.named_trainable()]  # after a head (stage 0's, relevance) is attached
        if acc.is_main_process:
            log.info("%s", describe(tm))
            log.info("device %s, %d process(es), mixed precision %s, %d CPU thread(s) per process",
                     acc.device, acc.num_processes, acc.mixed_precision, torch.get_num_threads())
        self.global_batch = cfg.run.batch_size * acc.num_processes
        self.micro_per_epoch = len(samples) // self.global_batch
        if self.micro_per_epoch == 0:
            raise ConfigError(f"{len(samples)} samples cannot fill one global batch of {self.global_batch}; "
                              "lower run.batch_size")
        self.total_steps = cfg.run.max_steps or max(1, math.ceil(cfg.run.epochs * self.micro_per_epoch
                                                                 / cfg.run.grad_accum))
        groups = parameter_groups(tm, cfg)
        optimizer = torch.optim.AdamW(groups, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, self.total_steps))
        module.train()
        self.module, self.optimizer = acc.prepare(module, optimizer)
        self.state = TrainState()
        if self.resume:
            self.load_checkpoint(self.resume)
        elif acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / METRICS).unlink(missing_ok=True)
        if acc.is_main_process:
            write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        acc, step = self.acc, self.state.step
        root = self.out / CHECKPOINTS
        final, tmp = root / f"step-{step:08d}", root / f".tmp-step-{step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(rng_state(), tmp / f"rng-{acc.process_index}.pt")
        if self.deepspeed:
            # every process writes its partition of the model and optimizer state (ZeRO); the engine's
            # copy is the one resumed from, since the module's own weights may be 16-bit or partitioned
            acc.save_state(str(tmp / ENGINE_STATE))
        with gathered(self._adapter_params(), self.zero_stage):  # collective under ZeRO-3: all processes
            if acc.is_main_process:
                if self.deepspeed:
                    write_text(tmp / TRAINABLE_NAMES, json.dumps(self.trainable_names, indent=0))
                else:
                    weights = {n: p.detach().float().cpu().contiguous() for n, p in self.tm.named_trainable()}
                    save_file(weights, str(tmp / "trainable.safetensors"), metadata={"format": "pt"})
                    torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
                meta = asdict(self.state) | {"num_processes": acc.num_processes, "deepspeed": self.deepspeed}
                (tmp / "state.json").write_text(json.dumps(meta, indent=2))
                (tmp / CONFIG_COPY).write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
                save_adapter(self.tm.peft, self.tm.lavida, tmp / "adapter",
                             save_shirg="coord" in self.cfg.trainable.components)
        acc.wait_for_everyone()
        if acc.is_main_process:
            honour_umask(tmp)  # safetensors and torch.save files get the same mode as every other file
            replace_dir(tmp, final)
            self._plot_loss()
            for old in checkpoint_dirs(self.out)[: -self.cfg.run.keep_checkpoints or None]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, which: bool | str) -> None:
        acc = self.acc
        if isinstance(which, str):
            path = Path(which)
        else:
            found = checkpoint_dirs(self.out)
            if not found:
                raise ConfigError(f"--resume: no checkpoint under {self.out / CHECKPOINTS}; run without --resume")
            path = found[-1]
        if not (path / "state.json").is_file():
            raise ConfigError(f"{path} is not a complete training checkpoint (no state.json)")
        meta = read_json_file(path / "state.json")
        check_resume(path, self.out, self.cfg.to_dict(), self.resume_with_changes, int(meta.get("step", 0)),
                     defaults=TrainConfig().to_dict())
        saved_world = meta.pop("num_processes", 1)
        saved_deepspeed = bool(meta.pop("deepspeed", False))
        if saved_deepspeed != self.deepspeed:
            raise ConfigError(f"checkpoint {path} was written {'with' if saved_deepspeed else 'without'} DeepSpeed; "
                              "resume it under the same kind of launch (accelerate config)")
        params = dict(self.tm.named_trainable())
        if self.deepspeed:
            names = set(json.loads((path / TRAINABLE_NAMES).read_text()))
        else:
            weights = read_safetensors_file(path / "trainable.safetensors")  # corrupt: a one-line error
            names = set(weights)
        if names != set(params):
            raise ConfigError(f"checkpoint {path} holds different trainable weights than this config "
                              f"(missing {sorted(set(params) - names)[:5]}, "
                              f"extra {sorted(names - set(params))[:5]}); resume with the same config")
        if self.deepspeed:
            if saved_world != acc.num_processes:
                log.warning("DeepSpeed checkpoint written by %d processes, resuming with %d: ZeRO partitions "
                            "may not load", saved_world, acc.num_processes)
            acc.load_state(str(path / ENGINE_STATE))  # weights + optimizer, on every process
        else:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(weights[n].to(p.dtype))
            self.optimizer.load_state_dict(_load_pt(path / "optimizer.pt"))
        self.scheduler.load_state_dict(_load_pt(path / "scheduler.pt"))
        if self.deepspeed:  # the engine's optimizer may keep its saved LRs; ours follow the scheduler
            for group, lr in zip(self.scheduler.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
                group["lr"] = lr
        self.state = TrainState(**meta)
        rank_file = path / f"rng-{acc.process_index}.pt"
        if saved_world != acc.num_processes or not rank_file.is_file():
            log.warning("checkpoint was written by %d processes, resuming with %d: RNG streams restart from "
                        "process 0's state", saved_world, acc.num_processes)
            rank_file = path / "rng-0.pt"
        set_rng_state(_load_pt(rank_file))
        if acc.is_main_process:
            metrics = self.out / METRICS
            if metrics.is_file():
                keep = [ln for ln in metrics.read_text(encoding="utf-8", errors="replace").splitlines()
                        if (rec := _metrics_record(ln)) is not None and rec["step"] <= self.state.step]
                write_text(metrics, "".join(ln + "\n" for ln in keep))
            log.info("resumed from %s (step %d, epoch %d, position %d)", path, self.state.step, self.state.epoch,
                     self.state.position)

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, acc, st = self.cfg, self.acc, self.state
        accum = cfg.run.grad_accum
        sampler = PositionSampler(len(self.dataset), cfg.run.batch_size, acc.num_processes, acc.process_index,
                                  cfg.run.seed, start=st.micro_step, stop=self.total_steps * accum)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate,
                                             num_workers=cfg.data.num_workers,
                                             generator=torch.Generator().manual_seed(cfg.run.seed))
        batches = iter(loader)
        writer = self._tensorboard()
        bar = tqdm(total=self.total_steps, initial=st.step, disable=not (acc.is_main_process and cfg.run.progress),
                   desc="train", dynamic_ncols=True)
        params = [p for _, p in self.tm.named_trainable()]
        divisor = loss_divisor(self.deepspeed, accum, acc.gradient_accumulation_steps)
        t_last, n_last = time.perf_counter(), 0
        while st.step < self.total_steps:
            parts: dict[str, torch.Tensor] = {}  # the module's outputs (loss and metrics), averaged over accum
            samples_t = torch.zeros((), device=acc.device)
            for a in range(accum):
                batch = next(batches)
                st.skipped_images += int(acc.reduce(torch.tensor(batch.skipped, device=acc.device), "sum"))
                st.truncated_answers += batch.truncated
                sync = a == accum - 1
                with self._micro_step_context(sync):
                    out = self.module(batch)
                    acc.backward(out["loss"] / divisor)  # under DeepSpeed, steps the engine when sync
                for k, v in out.items():
                    if k != "samples":
                        parts[k] = parts.get(k, 0.0) + v.detach().float() / accum
                samples_t = samples_t + out["samples"].float()
                st.micro_step += 1
            grad_norm = None
            if cfg.optim.max_grad_norm or self.deepspeed:
                # under DeepSpeed the engine already clipped in its step; this only reads its norm (or None)
                grad_norm = grad_norm_value(acc.clip_grad_norm_(params, cfg.optim.max_grad_norm or 0.0))
            self.optimizer.step()  # no-ops under DeepSpeed (accelerate's wrappers)
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            st.step += 1
            st.epoch, st.position = sampler.position(st.micro_step)
            names = sorted(parts)
            means = acc.reduce(torch.stack([parts[k] for k in names]), "mean").tolist()
            metrics = dict(zip(names, means, strict=True))
            loss = metrics.pop("loss")
            samples = int(acc.reduce(samples_t, "sum"))
            st.samples += samples
            n_last += samples
            st.losses.append(loss)
            if acc.is_main_process and (st.step % cfg.run.log_every == 0 or st.step == self.total_steps):
                now = time.perf_counter()
                rate = n_last / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
                record = {"step": st.step, "epoch": st.epoch, "loss": loss, **metrics,
                          "lr": lrs, "grad_norm": grad_norm, "samples": st.samples, "samples_per_s": rate,
                          "skipped_images": st.skipped_images, "truncated_answers": st.truncated_answers}
                with open(self.out / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for k in ("loss", *metrics, "samples_per_s"):
                        writer.add_scalar(f"train/{k}", record[k], st.step)
                    for k, v in lrs.items():
                        writer.add_scalar(f"lr/{k}", v, st.step)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{max(lrs.values()):.2e}", sps=f"{rate:.1f}")
            bar.update(1)
            if st.step % cfg.run.checkpoint_every == 0 or st.step == self.total_steps:
                self.save_checkpoint()
                t_last = time.perf_counter()  # samples/s measures training, not checkpoint writes
            if self.stop_after is not None and st.step >= self.stop_after:
                break
        bar.close()
        if writer is not None:
            writer.close()
        result = {"steps": st.step, "losses": st.losses, "skipped_images": st.skipped_images,
                  "output_dir": str(self.out)}
        if st.step >= self.total_steps:
            result |= self.finish()
        return result

    def finish(self) -> dict[str, str]:
        """Final outputs: the adapter folder, plus a full LaViDa checkpoint when base weights were trained."""
        acc, cfg, out = self.acc, self.cfg, {}
        if acc.is_main_process and self.state.skipped_images:
            log.warning("%d training sample(s) were skipped because their image could not be read",
                        self.state.skipped_images)
        save_coord = "coord" in cfg.trainable.components
        if self.tm.peft is not None or save_coord or self.tm.lavida.relevance_head is not None:
            adapter = self.out / "adapter"
            with gathered(self._adapter_params(), self.zero_stage):  # collective under ZeRO-3
                if acc.is_main_process:
                    # written next to the old adapter and swapped in: an interruption never leaves none
                    write_dir(adapter, lambda d: save_adapter(self.tm.peft, self.tm.lavida, d, save_shirg=save_coord))
            out["adapter"] = str(adapter)
        if set(cfg.trainable.components) - {"coord"}:
            full = self.out / "model"
            lavida = self.tm.lavida
            # ZeRO-3: one full 16-bit copy of the model on every GPU while it is written (untested);
            # modifier_rank=0 because merge_lora changes weights in place on the main process
            with gathered(lavida.parameters(), self.zero_stage, modifier_rank=0):
                if acc.is_main_process:
                    if self.tm.peft is not None:
                        merge_lora(lavida)
                    write_dir(full, lambda d: write_lavida_checkpoint(lavida, d, source_dir=cfg.model.path))
            out["model"] = str(full)
        acc.wait_for_everyone()
        return out

    def _plot_loss(self) -> None:
        """OUTPUT/loss.png from metrics.jsonl (a plotting failure never stops training)."""
        try:
            loss_curve(self.out / METRICS, self.out / "loss.png")
        except Exception as e:  # noqa: BLE001 - the curve is a convenience; the metrics file is the record
            log.warning("could not draw %s: %s", self.out / "loss.png", e)

    def _adapter_params(self) -> list[torch.nn.Parameter]:
        """The parameters an adapter folder holds (LoRA, SHIRG's own, the relevance head), gathered under ZeRO-3."""
        return [p for n, p in self.tm.lavida.named_parameters()
                if "lora_" in n or n.startswith(("shirg.", "relevance_head."))]

    def _micro_step_context(self, sync: bool) -> AbstractContextManager:
        """DDP: skip the gradient all-reduce except on the last micro-batch. DeepSpeed: accelerate's
        ``accumulate`` sets ``sync_gradients``, which tells the engine where the accumulation boundary
        (and so its optimizer step) is; ``no_sync`` is not used since ZeRO-2/3 forbid it."""
        if not self.deepspeed:
            return nullcontext() if sync else self.acc.no_sync(self.module)
        return self._deepspeed_accumulate(sync)

    @contextmanager
    def _deepspeed_accumulate(self, sync: bool):
        with self.acc.accumulate(self.module):
            if self.acc.sync_gradients != sync:
                raise RuntimeError(f"accelerate's accumulation counter is out of step with the trainer "
                                   f"(sync_gradients={self.acc.sync_gradients}, expected {sync})")
            yield

    def _tensorboard(self):
        if not (self.cfg.run.tensorboard and self.acc.is_main_process):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("run.tensorboard is on but the tensorboard package is not installed; logging JSONL only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


def _load_pt(path: Path):
    """A tensor-only torch file of a checkpoint (weights_only: nothing is unpickled beyond tensors and
    plain containers); CheckpointError when it is missing, corrupt or truncated."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete") from e
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(f"cannot read {path}: {' '.join(str(e).split())[:200]}; the checkpoint is "
                              "damaged, resume from an earlier one") from e


def _metrics_record(line: str) -> dict | None:
    """One metrics.jsonl record, or None for a blank, torn (a crash mid-write) or foreign line."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("step"), int) else None


def train(cfg: TrainConfig, resume: bool | str = False, stop_after: int | None = None,
          resume_with_changes: bool = False) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the per-step losses and the output paths. ``resume_with_changes``:
    resume even when exactness-relevant settings differ from the checkpoint's (recorded)."""
    trainer = Trainer(cfg, resume=resume, stop_after=stop_after, resume_with_changes=resume_with_changes)
    trainer.setup()
    return trainer.run()
