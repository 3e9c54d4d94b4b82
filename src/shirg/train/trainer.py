"""The training loop: accelerate for devices, DDP and mixed precision; exact, atomic checkpoints.

One optimizer step = ``grad_accum`` micro-batches per process (no gradient sync until the last).
A checkpoint holds the trainable weights, optimizer, scheduler, every process's RNG states and the
data position, written to a temporary folder and renamed, so ``--resume`` continues exactly where
the last checkpoint left off (a killed run loses at most ``checkpoint_every`` steps).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from shirg.errors import ConfigError
from shirg.train.config import TrainConfig

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


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


def _use_cpu() -> bool:
    forced = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    return forced or not torch.cuda.is_available()


def _mixed_precision(cfg: TrainConfig) -> str | None:
    if cfg.run.mixed_precision != "auto":
        return cfg.run.mixed_precision
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # as the accelerate launch config says
    return "no" if _use_cpu() else "bf16"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINTS
    return sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool | str = False, stop_after: int | None = None) -> None:
        self.cfg, self.resume, self.stop_after = cfg, resume, stop_after
        self.out = Path(cfg.run.output_dir)

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        import shirg
        from shirg.model.inference import LAVIDA_MODES, VisualOptions
        from shirg.train.data import TrainDataset, load_mixture, load_sources
        from shirg.train.lora import describe, make_trainable, parameter_groups
        from shirg.train.loss import LossModule

        cfg = self.cfg
        if not cfg.model.path:
            raise ConfigError("model.path is empty; set it to a LaViDa checkpoint folder (--set model.path=DIR)")
        if not self.resume and checkpoint_dirs(self.out):
            raise ConfigError(f"{self.out} already holds checkpoints; pass --resume to continue, "
                              "or choose another run.output_dir")
        # cpu=True on machines without CUDA: processes started by torchrun (accelerate launch
        # --multi_gpu) then form a gloo group; accelerate's own --cpu launcher starts only one process.
        self.acc = acc = Accelerator(
            cpu=_use_cpu(),
            mixed_precision=_mixed_precision(cfg),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.run.find_unused_parameters)],
        )
        set_seed(cfg.run.seed)
        mode = cfg.data.mode
        resolutions = sorted({r for r in cfg.data.resolutions})
        from shirg.train.data import snap_resolution

        if mode not in LAVIDA_MODES:
            for r in resolutions:
                VisualOptions(resolution=snap_resolution(r, cfg.data.snap), **cfg.data.visual).validate(mode)
        dtype = None if cfg.model.dtype == "auto" else cfg.model.dtype
        lavida = shirg.load(cfg.model.path, device=acc.device, dtype=dtype, shirg_weights=cfg.model.shirg_weights)
        if cfg.run.gradient_checkpointing:
            lavida.model.gradient_checkpointing = True
            lavida.model.vision_tower.vision_model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        self.tm = tm = make_trainable(lavida, cfg)
        if acc.is_main_process:
            log.info("%s", describe(tm))
        self.trainable_names = [n for n, _ in tm.named_trainable()]

        if cfg.data.mixture:
            samples = load_mixture(cfg.data.mixture, seed=cfg.run.seed)
        else:
            samples = load_sources(cfg.data.sources, ".", cfg.run.seed)
        if not samples:
            raise ConfigError("the training data is empty: set data.mixture or data.sources")
        tok = lavida.tokenizer
        eot = lavida.config.eot_token_id
        if eot is None:
            eot_guess = tok.convert_tokens_to_ids("<|eot_id|>")
            eot = eot_guess if isinstance(eot_guess, int) and eot_guess >= 0 else None
        self.dataset = TrainDataset(samples, tok, answer_length=cfg.data.answer_length,
                                    eos_id=lavida.config.llm.eos_token_id,
                                    eot_id=eot if cfg.data.end_with_eot else None,
                                    resolutions=cfg.data.resolutions, snap=cfg.data.snap, seed=cfg.run.seed)
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
        module = LossModule(tm.module, mode, cfg.data.visual, cfg.data.mask_eps)
        module.train()
        self.module, self.optimizer = acc.prepare(module, optimizer)
        self.state = TrainState()
        if self.resume:
            self.load_checkpoint(self.resume)
        elif acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / METRICS).unlink(missing_ok=True)
        if acc.is_main_process:
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
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
        if acc.is_main_process:
            from shirg.train.adapter import save_adapter

            weights = {n: p.detach().float().cpu().contiguous() for n, p in self.tm.named_trainable()}
            save_file(weights, str(tmp / "trainable.safetensors"), metadata={"format": "pt"})
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            meta = asdict(self.state) | {"num_processes": acc.num_processes}
            (tmp / "state.json").write_text(json.dumps(meta, indent=2))
            save_adapter(self.tm.peft, self.tm.lavida, tmp / "adapter",
                         save_shirg="coord" in self.cfg.trainable.components)
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
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
        weights = load_file(str(path / "trainable.safetensors"))
        params = dict(self.tm.named_trainable())
        if set(weights) != set(params):
            raise ConfigError(f"checkpoint {path} holds different trainable weights than this config "
                              f"(missing {sorted(set(params) - set(weights))[:5]}, "
                              f"extra {sorted(set(weights) - set(params))[:5]}); resume with the same config")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(weights[n].to(p.dtype))
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        meta = json.loads((path / "state.json").read_text())
        saved_world = meta.pop("num_processes", 1)
        self.state = TrainState(**meta)
        rank_file = path / f"rng-{acc.process_index}.pt"
        if saved_world != acc.num_processes or not rank_file.is_file():
            log.warning("checkpoint was written by %d processes, resuming with %d: RNG streams restart from "
                        "process 0's state", saved_world, acc.num_processes)
            rank_file = path / "rng-0.pt"
        set_rng_state(torch.load(rank_file, weights_only=True))
        if acc.is_main_process:
            metrics = self.out / METRICS
            if metrics.is_file():
                keep = [ln for ln in metrics.read_text().splitlines()
                        if ln.strip() and json.loads(ln)["step"] <= self.state.step]
                metrics.write_text("".join(ln + "\n" for ln in keep))
            log.info("resumed from %s (step %d, epoch %d, position %d)", path, self.state.step, self.state.epoch,
                     self.state.position)

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from shirg.train.data import PositionSampler, collate

        cfg, acc, st = self.cfg, self.acc, self.state
        accum = cfg.run.grad_accum
        sampler = PositionSampler(len(self.dataset), cfg.run.batch_size, acc.num_processes, acc.process_index,
                                  cfg.run.seed, start=st.micro_step, stop=self.total_steps * accum)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=cfg.data.num_workers,
                                             generator=torch.Generator().manual_seed(cfg.run.seed))
        batches = iter(loader)
        writer = self._tensorboard()
        bar = tqdm(total=self.total_steps, initial=st.step, disable=not (acc.is_main_process and cfg.run.progress),
                   desc="train", dynamic_ncols=True)
        params = [p for _, p in self.tm.named_trainable()]
        t_last, n_last = time.perf_counter(), 0
        while st.step < self.total_steps:
            parts = torch.zeros(4, device=acc.device)  # loss, ce1, ce2, samples
            for a in range(accum):
                batch = next(batches)
                st.skipped_images += int(acc.reduce(torch.tensor(batch.skipped, device=acc.device), "sum"))
                st.truncated_answers += batch.truncated
                sync = a == accum - 1
                with nullcontext() if sync else acc.no_sync(self.module):
                    out = self.module(batch)
                    acc.backward(out["loss"] / accum)
                parts += torch.stack([out["loss"].detach().float(), out["ce_copy1"].float(),
                                      out["ce_copy2"].float(), out["samples"].float()]) / torch.tensor(
                                          [accum, accum, accum, 1.0], device=acc.device)
                st.micro_step += 1
            grad_norm = None
            if cfg.optim.max_grad_norm:
                grad_norm = float(acc.clip_grad_norm_(params, cfg.optim.max_grad_norm))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            st.step += 1
            st.epoch, st.position = sampler.position(st.micro_step)
            loss, ce1, ce2 = (float(v) for v in acc.reduce(parts[:3], "mean"))
            samples = int(acc.reduce(parts[3:], "sum"))
            st.samples += samples
            n_last += samples
            st.losses.append(loss)
            if acc.is_main_process and (st.step % cfg.run.log_every == 0 or st.step == self.total_steps):
                now = time.perf_counter()
                rate = n_last / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
                record = {"step": st.step, "epoch": st.epoch, "loss": loss, "ce_copy1": ce1, "ce_copy2": ce2,
                          "lr": lrs, "grad_norm": grad_norm, "samples": st.samples, "samples_per_s": rate,
                          "skipped_images": st.skipped_images, "truncated_answers": st.truncated_answers}
                with open(self.out / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for k in ("loss", "ce_copy1", "ce_copy2", "samples_per_s"):
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
        from shirg.train.adapter import merge_lora, save_adapter, write_lavida_checkpoint

        acc, cfg, out = self.acc, self.cfg, {}
        if acc.is_main_process and self.state.skipped_images:
            log.warning("%d training sample(s) were skipped because their image could not be read",
                        self.state.skipped_images)
        if acc.is_main_process:
            adapter = self.out / "adapter"
            if adapter.exists():
                shutil.rmtree(adapter)
            if self.tm.peft is not None or "coord" in cfg.trainable.components:
                save_adapter(self.tm.peft, self.tm.lavida, adapter, save_shirg="coord" in cfg.trainable.components)
                out["adapter"] = str(adapter)
            if set(cfg.trainable.components) - {"coord"}:
                full = self.out / "model"
                if full.exists():
                    shutil.rmtree(full)
                lavida = self.tm.lavida
                if self.tm.peft is not None:
                    merge_lora(lavida)
                write_lavida_checkpoint(lavida, full, source_dir=cfg.model.path)
                out["model"] = str(full)
        acc.wait_for_everyone()
        return out

    def _tensorboard(self):
        if not (self.cfg.run.tensorboard and self.acc.is_main_process):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("run.tensorboard is on but the tensorboard package is not installed; logging JSONL only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


def train(cfg: TrainConfig, resume: bool | str = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the per-step losses and the output paths."""
    trainer = Trainer(cfg, resume=resume, stop_after=stop_after)
    trainer.setup()
    return trainer.run()
