"""`python -m train rl --config configs/rl_tiny.json [key=value ...]`: curiosity-driven GRPO on TRL.

    python -m train rl --config configs/rl_tiny.json                      # the embedded model, CPU
    python -m train rl --config configs/rl_tiny_ci.json                   # a few steps (CI)
    accelerate launch --config_file configs/accelerate_zero2.yaml -m train rl --config configs/rl_7b.json

A thin layer over TRL's GRPOTrainer (Pixel Reasoner's second stage, docs/protocol.md section 4). One hook
differs: `_generate_and_score_completions`. Rollouts run through the core tool loop on the policy
itself, batched turn by turn (train/rollout.py: transformers `generate`, or TRL's vLLM integration
with `use_vllm`), token by token as the policy saw them; rewards are shaped per group with the
curiosity bonus and the operation penalty (train/rewards.py); groups whose rewards are all equal
are filtered out (their rollouts are masked from the loss and from its token count); the batch is
laid out as TRL expects (prompt / completion ids, `tool_mask` = 0 on every observation token) with
each row's images beside it, and TRL's loss, optimiser, schedule, DeepSpeed and logging do the rest.
The per-token log-probs are computed over the whole multi-turn conversation with the images the
policy saw (`_get_per_token_logps_and_entropies`, TRL's fused LM head).

Queries are TinyZoom-style records (`meta.task`: question, answer, category, media with the
original picture), e.g. the validation split of `python -m train synth` (the train split does not
keep originals). Logged every step into <out>/metrics.jsonl: reward, accuracy, rapr, rapr_image,
rapr_video, curiosity, penalty, ops_per_traj, error_rate, response_length, frac_filtered, loss,
kl (when on), plus eval_* rows from periodic TinyZoom evaluations; sample trajectories go to the
session log (`db`) with client "rl".
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from core import protocol as P
from core.backends.base import GenerationParams
from core.loop import LoopConfig, Task
from core.media import MediaError, MemoryImageStore
from core.operations import PIXEL_PRESETS, resolve_pixel_preset
from train.metrics import MetricsJsonlCallback, metrics_row
from train.rewards import group_advantages, informative_groups, shaped_rewards
from train.rl_stats import is_correct, rollout_stats, step_metrics, tinyzoom_summary
from train.rollout import (PolicyBackend, Rollout, VLLMPolicyBackend, forward_logps, rollout,
                           training_batch)
from train.run import (ResumesSavedWeights, TimeBudgetCallback, TrainerRunConfig, option, run_main, save_final,
                       start_run, train_or_finish)

log = logging.getLogger(__name__)

VLLM_MODES = ("colocate",)
"""TRL's vLLM modes the rollouts support (train.rollout.VLLMPolicyBackend drives the in-process engine)."""


@dataclass
class RLRunConfig(TrainerRunConfig):
    """Defaults are the release's 7B recipe where the release states them (configs/rl_7b.json)."""

    data: str = option("data/tinyzoom", "a dataset folder whose records carry meta.task with original media")
    split: str = option("validation", "the split whose tasks are the RL queries")
    categories: list[str] | None = option(None, "only these task categories")
    limit: int | None = option(None, "use the first N queries")
    model: str = "assets/pixel-reasoner-tiny"
    pixel_preset: str | None = option(None, "resolution preset; None: the checkpoint's studio.json, else \"train\"")
    out: str = "runs/rl_tiny"
    # rollouts
    tools: bool = option(True, "offer the visual operations in rollouts")
    group_size: int = option(8, "rollouts per query, the GRPO group (the release does not state it)")
    temperature: float = option(1.0, "rollout sampling temperature")
    top_p: float = option(1.0, "rollout nucleus sampling")
    max_new_tokens: int = option(2048, "new tokens per turn")
    max_ops: int = option(4, "visual operations per rollout")
    max_context_tokens: int = option(10000, "a rollout's token budget (the release's generate max length)")
    # reward (train/rewards.py; released defaults)
    curiosity: bool = option(True, "add the curiosity bonus")
    alpha: float = option(0.25, "curiosity coefficient")
    penalty: float = option(0.05, "operation penalty coefficient (the paper's beta)")
    H: float = option(0.3, "the RaPR the curiosity bonus aims for")
    N: int = option(1, "operations allowed before the penalty")
    image_div: float = option(2.0, "the release's curiosity divisor for images")
    video_div: float = option(1.5, "the release's curiosity divisor for videos")
    filter_zero_advantage: bool = option(True, "mask groups whose rewards are all equal from the loss")
    # GRPO / optimisation
    kl: float = option(0.0, "TRL's beta: KL off by default, as released")
    loss_type: str = option("dapo", "TRL's loss: token-level mean over kept tokens (filtered rollouts add nothing)")
    scale_rewards: str = option("group", "TRL's reward scaling")
    epsilon: float = option(0.2, "PPO clip range")
    num_iterations: int = option(1, "optimisation passes per generation batch")
    learning_rate: float = 1e-6
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    grad_accum: int = 4
    freeze_vision: bool = True
    use_vllm: bool = option(False, "rollouts by TRL's vLLM integration")
    vllm_mode: str = option("colocate", "vLLM beside training on the same GPUs")
    vllm_gpu_memory_utilization: float = option(0.3, "vLLM's share of GPU memory")
    vllm_max_model_length: int | None = option(None, "vLLM's context length")
    # logging
    logging_steps: int = 1
    eval_every: int = option(0, "a TinyZoom eval every N steps (and before the first); 0: off")
    eval_data: str | None = option(None, "eval dataset (default: `data`)")
    eval_split: str = option("test", "eval split")
    eval_categories: list[str] = option(help="eval task categories", factory=lambda: ["zoom_needed", "zoom_optional"])
    eval_limit: int | None = option(64, "eval items")
    eval_batch: int = option(16, "conversations per eval batch")
    db: str | None = option(None, "session log to write sample trajectories into")
    log_trajectories: int = option(4, "trajectories logged per step")
    device: str | None = option(None, "None: cuda when available")

    def __post_init__(self) -> None:
        if self.vllm_mode not in VLLM_MODES:
            raise ValueError(f"vllm_mode={self.vllm_mode!r} is not supported: rollouts run through TRL's "
                             f"colocated engine ({', '.join(VLLM_MODES)}); a `trl vllm-serve` server is not")

    def reward_coefs(self) -> dict:
        return {"alpha": self.alpha, "beta": self.penalty, "H": self.H, "N": self.N, "image_div": self.image_div,
                "video_div": self.video_div, "curiosity": self.curiosity}


# ---- data ------------------------------------------------------------------------------------

def load_queries(data: str, split: str, categories=None, limit=None) -> list[Task]:
    """TinyZoom-style records -> loop Tasks on their original media (meta.task names it), read by the
    evaluation harness's TinyZoom loader."""
    from core.evaluation.data import EvalDataError, load_tinyzoom

    try:
        items = load_tinyzoom(data, split, limit, categories)
    except EvalDataError as e:
        raise SystemExit(f"{e}; RL needs records with full-resolution originals (meta.task.media), "
                         "e.g. the validation split of `train synth`") from None
    tasks, skipped = [], []
    for item in items:
        try:
            tasks.append(item.task())
        except (MediaError, ValueError) as e:  # one unreadable picture or video never stops the run
            skipped.append(f"{item.id}: {str(e)[:200]}")
    if skipped:
        log.warning("skipped %d queries whose media the loop cannot use: %s", len(skipped), "; ".join(skipped[:5]))
    if not tasks:
        raise SystemExit(f"no usable RL queries in {data} ({split}): {len(skipped)} skipped")
    return tasks


# ---- the trainer -----------------------------------------------------------------------------

def _trainer_class():
    from trl import GRPOTrainer

    class PixelReasonerGRPOTrainer(ResumesSavedWeights, GRPOTrainer):
        """GRPOTrainer whose rollouts are tool-loop episodes with curiosity-shaped group rewards."""

        def setup(self, cfg: RLRunConfig, tasks: list[Task], encoder, loop: LoopConfig, recorder=None) -> None:
            self.rl, self.tasks, self.encoder, self.loop_config, self.recorder = cfg, tasks, encoder, loop, recorder
            self._mm_rows: list[dict] | None = None

        # -- rollouts ----------------------------------------------------------------------
        @contextmanager
        def policy_backend(self):
            from trl.models import unwrap_model_for_generation

            if self.use_vllm:
                if self.state.global_step != self._last_loaded_step:
                    self.vllm_generation.sync_weights()
                    self._last_loaded_step = self.state.global_step
                yield VLLMPolicyBackend(self.vllm_generation, self.encoder, self.rl.model)
                return
            was_training = self.model.training
            with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                             gather_deepspeed3_params=self.args.ds3_gather_for_generation) as m:
                m.eval()
                try:
                    yield PolicyBackend(m, self.encoder, self.rl.model)
                finally:
                    m.train(was_training)

        def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
            from accelerate.utils import gather_object

            device = self.accelerator.device
            mode = "train" if self.model.training else "eval"
            tasks = [self.tasks[x["row"]] for x in inputs]
            params = GenerationParams(max_new_tokens=self.rl.max_new_tokens, temperature=self.rl.temperature,
                                      top_p=self.rl.top_p, logprobs=True)
            store = MemoryImageStore()
            with self.policy_backend() as backend:
                rollouts = rollout(backend, tasks, self.loop_config, params, store)
            local = rollout_stats(rollouts, tasks)
            stats = {k: gather_object(v) for k, v in local.items()}  # groups may span processes
            g = self.num_generations if mode == "train" else self.num_generations_eval
            shaped = shaped_rewards(stats["correct"], stats["n_ops"], stats["is_video"], stats["final_op_failed"],
                                    g, **self.rl.reward_coefs())
            adv = group_advantages(shaped.rewards, g, scale=self.scale_rewards != "none")
            keep = informative_groups(shaped.rewards, g) if self.rl.filter_zero_advantage else [True] * len(adv)
            lo = self.accelerator.process_index * len(inputs)
            local_adv, local_keep = adv[lo:lo + len(inputs)], keep[lo:lo + len(inputs)]

            batch = training_batch([r.ledger for r in rollouts], self.encoder)
            for key, value in list(batch.items()):
                if isinstance(value, torch.Tensor):
                    batch[key] = value.to(device)
            batch["tool_mask"] = batch["tool_mask"] * torch.tensor(local_keep, device=device, dtype=torch.long)[:, None]
            loss_mask = batch["completion_mask"] * batch["tool_mask"]
            out = {**batch, "advantages": torch.tensor(local_adv, dtype=torch.float32, device=device),
                   "num_items_in_batch": self.accelerator.gather(loss_mask.sum()).sum()}
            sampling = out.pop("sampling_per_token_logps")
            self._add_old_and_ref_logps(out, sampling, mode)

            if not any(keep) and self.accelerator.is_main_process:
                log.warning("step %d: every group's rollouts got the same reward, so no gradient; queries the "
                            "policy always (or never) solves teach nothing: raise temperature or group_size, or "
                            "choose harder categories", self.state.global_step + 1)
            for key, value in step_metrics(stats, shaped, keep).items():
                self._metrics[mode][key].append(value)
            if self.accelerator.is_main_process:
                self._log_sample(rollouts, store, shaped.rewards[lo:lo + len(inputs)], local_adv)
            return out

        def _add_old_and_ref_logps(self, out: dict, sampling: torch.Tensor, mode: str) -> None:
            """old_per_token_logps when updates run off-policy (TRL's rule), the vLLM importance
            sampling ratio, and the reference model's log-probs when KL is on."""
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
            attn = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
            keep = out["completion_ids"].size(1)
            bs = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
            generate_every = self.args.steps_per_generation * self.num_iterations
            need_old = self.args.gradient_accumulation_steps % generate_every != 0 or self.use_vllm
            with torch.no_grad():
                if need_old:
                    self._mm_rows = out["mm"]
                    out["old_per_token_logps"], _ = self._get_per_token_logps_and_entropies(
                        self.model, ids, attn, keep, bs, mm_token_type_ids=out["mm_token_type_ids"])
                if self.use_vllm and self.vllm_importance_sampling_correction:
                    ratio = torch.exp(out["old_per_token_logps"] - sampling).nan_to_num(1.0)
                    out["importance_sampling_ratio"] = ratio.clamp(max=self.vllm_importance_sampling_clip_max or 1e9)
                if self.beta != 0.0:
                    out["ref_per_token_logps"], _ = forward_logps(
                        self.ref_model, ids, attn, keep, out["mm"], out["mm_token_type_ids"], bs)

        def _log_sample(self, rollouts: list[Rollout], store, rewards, advantages) -> None:
            if self.recorder is None or not self.rl.log_trajectories:
                return
            for k, (r, reward, a) in enumerate(list(zip(rollouts, rewards, advantages))[:self.rl.log_trajectories]):
                traj = r.trajectory
                traj.correct = is_correct(traj)
                traj.meta.update({"rl_step": self.state.global_step, "reward": reward, "advantage": a,
                                  "run": self.rl.out})
                for ref in traj.image_refs():
                    self.recorder.log.images.put(store.get(ref.sha))
                traj.id = f"rl-{Path(self.rl.out).name}-{self.state.global_step}-{k}-{traj.id}"
                self.recorder.write(traj)

        # -- the training forward ----------------------------------------------------------
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self._mm_rows = inputs["mm"]  # the micro-batch's images, read by the forward below
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               mm_token_type_ids=None, **_vision_kwargs):
            # TRL's own vision kwargs (pixel_values, image_grid_thw, num_images) are absent here: each
            # row's images and videos travel in `mm` (see train.rollout.training_batch).
            with self.accelerator.autocast():
                logps, ent = forward_logps(model, input_ids, attention_mask, logits_to_keep, self._mm_rows,
                                           mm_token_type_ids, batch_size, compute_entropy)
            return logps, ent, None

        # -- periodic TinyZoom evaluation ---------------------------------------------------
        def evaluate_tinyzoom(self, eval_tasks: list[Task]) -> dict:
            params = GenerationParams(max_new_tokens=self.rl.max_new_tokens, temperature=0.0)
            trajs = []
            with self.policy_backend() as backend:
                for i in range(0, len(eval_tasks), self.rl.eval_batch):
                    trajs += [r.trajectory for r in rollout(backend, eval_tasks[i:i + self.rl.eval_batch],
                                                            self.loop_config, params)]
            return tinyzoom_summary(trajs, eval_tasks)

    return PixelReasonerGRPOTrainer


def _eval_callback(trainer, eval_tasks: list[Task], every: int, path: Path):
    from transformers import TrainerCallback

    class TinyZoomEval(TrainerCallback):
        def _run(self, state):
            if not state.is_world_process_zero:
                return
            t0 = time.perf_counter()
            row = metrics_row(state.global_step, trainer.evaluate_tinyzoom(eval_tasks))
            row["eval_seconds"] = round(time.perf_counter() - t0, 2)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            log.info("tinyzoom eval at step %d: %s", state.global_step, row)

        def on_train_begin(self, args, state, control, **kw):
            self._run(state)

        def on_step_end(self, args, state, control, **kw):
            last = state.global_step == state.max_steps or control.should_training_stop
            if state.global_step % every == 0 or last:
                self._run(state)

    return TinyZoomEval()


# ---- run -------------------------------------------------------------------------------------

def build_model(cfg: RLRunConfig):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from core.backends.hf import read_pixel_preset
    from core.encoding import VisionTextEncoder

    kwargs = {"dtype": torch.bfloat16 if cfg.bf16 else torch.float32}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(cfg.model, **kwargs)
    if cfg.freeze_vision:
        for p in model.model.visual.parameters():
            p.requires_grad_(False)
    encoder = VisionTextEncoder.from_pretrained(cfg.model)
    return model, encoder, resolve_pixel_preset(cfg.pixel_preset, read_pixel_preset(cfg.model))


def train(cfg: RLRunConfig) -> dict:
    import os

    from datasets import Dataset
    from trl import GRPOConfig

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    out = start_run(cfg, "rl")
    model, encoder, cfg.pixel_preset = build_model(cfg)
    loop = LoopConfig(tools=cfg.tools, pixels=PIXEL_PRESETS[cfg.pixel_preset], max_ops=cfg.max_ops,
                      max_context_tokens=cfg.max_context_tokens)
    tasks = load_queries(cfg.data, cfg.split, cfg.categories, cfg.limit)
    log.info("RL: %d queries from %s/%s, group size %d, preset %s", len(tasks), cfg.data, cfg.split, cfg.group_size,
             cfg.pixel_preset)
    dataset = Dataset.from_dict({"prompt": [t.question for t in tasks], "row": list(range(len(tasks)))})
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        num_generations=cfg.group_size, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, temperature=cfg.temperature, top_p=cfg.top_p,
        beta=cfg.kl, epsilon=cfg.epsilon, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        num_iterations=cfg.num_iterations, max_completion_length=cfg.max_new_tokens,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        seed=cfg.seed, bf16=cfg.bf16, activation_checkpointing=cfg.gradient_checkpointing, deepspeed=cfg.deepspeed,
        report_to=cfg.report_to, disable_tqdm=cfg.disable_tqdm, remove_unused_columns=False,
        use_cpu=not cuda, use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, vllm_max_model_length=cfg.vllm_max_model_length,
        generation_kwargs={"stop": list(P.STOP_STRINGS), "include_stop_str_in_output": True} if cfg.use_vllm else None,
        log_completions=False, mask_truncated_completions=False, ddp_find_unused_parameters=False,
        restore_callback_states_from_checkpoint=True,  # the time budget left (TimeBudgetCallback)
    )
    recorder = None
    if cfg.db:
        from core.recorder import Recorder
        from core.sessionlog import SessionLog

        recorder = Recorder(SessionLog(cfg.db), client="rl")
    trainer_cls = _trainer_class()
    metrics_path = out / "metrics.jsonl"
    callbacks = [MetricsJsonlCallback(metrics_path)]
    if cfg.max_seconds:  # before the eval callback, so that the stopping step is evaluated too
        callbacks.append(TimeBudgetCallback(cfg.max_seconds, lr=None))
    trainer = trainer_cls(model=model, args=args, reward_funcs=[shaped_reward_placeholder], train_dataset=dataset,
                          processing_class=encoder.tokenizer, callbacks=callbacks)
    trainer.setup(cfg, tasks, encoder, loop, recorder)
    if cfg.eval_every:
        eval_tasks = load_queries(cfg.eval_data or cfg.data, cfg.eval_split, cfg.eval_categories, None)
        eval_tasks = _balanced(eval_tasks, cfg.eval_limit)
        trainer.add_callback(_eval_callback(trainer, eval_tasks, cfg.eval_every, metrics_path))
    t0 = time.time()
    steps, _ = train_or_finish(trainer, out, cfg.max_steps)
    seconds = time.time() - t0
    final = Path(cfg.final_dir) if cfg.final_dir else out / "final"
    source = Path(cfg.model) if Path(cfg.model).is_dir() else None
    save_final(trainer, encoder, cfg, source, final, pictures=[t.image for t in tasks if t.image is not None])
    summary = {"steps": steps, "seconds": round(seconds, 1), "processes": args.world_size,
               "queries": len(tasks),
               "final_dir": str(final), "metrics": str(metrics_path)}
    if trainer.is_world_process_zero():
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _balanced(tasks: list[Task], limit: int | None) -> list[Task]:
    """Up to `limit` tasks split evenly over their categories (records are grouped by category)."""
    if not limit or len(tasks) <= limit:
        return tasks
    cats = sorted({t.meta.get("category") for t in tasks})
    per = max(1, limit // len(cats))
    return [t for c in cats for t in [t for t in tasks if t.meta.get("category") == c][:per]]


def shaped_reward_placeholder(completions, **kwargs):
    """GRPOTrainer requires a reward function; this trainer shapes rewards per group itself
    (train.rewards.shaped_rewards needs the whole group's RaPR), so TRL never calls this one."""
    raise RuntimeError("rewards are computed by PixelReasonerGRPOTrainer._generate_and_score_completions")


def main(argv: list[str] | None = None) -> int:
    return run_main("python -m train rl", __doc__, RLRunConfig, train, argv)
