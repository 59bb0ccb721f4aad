"""A run's settings, resolved once from config, recipe, model, data and machine (mobilenets.train.config)."""

import dataclasses

import pytest
import torch

import mobilenets
from mobilenets.train import TrainConfig
from mobilenets.train.config import Settings, resolve_settings
from mobilenets.train.recipes import RECIPES
from mobilenets.train.tasks import task_for_model


def _resolve(model_name="mobilenet_v3_small", world_size=1, **config):
    model = mobilenets.create_model(model_name, width_mult=0.5, num_classes=10, in_chans=1, small_input=True)
    cfg = TrainConfig(model=model_name, **config)
    return resolve_settings(cfg, model=model, image_size=28, world_size=world_size, device=torch.device("cpu"))


def test_defaults_come_from_the_recipe_scaled_to_the_global_batch():
    default = RECIPES["default"]
    s = _resolve(batch_size=64, world_size=2, epochs=5)
    assert (s.opt, s.weight_decay, s.label_smoothing, s.ema_decay) == (
        default.opt, default.weight_decay, default.label_smoothing, default.ema_decay)
    assert s.global_batch == 128 and s.lr == pytest.approx(default.lr_per_256 * 128 / 256)
    assert s.warmup_epochs == pytest.approx(min(default.warmup_epochs, 0.5))  # at most a tenth of the run
    assert s.clip_grad == 0.0 and s.time_budget_s is None and s.distill is None
    assert s.amp_dtype is None and s.channels_last is True  # auto on the CPU: no autocast, channels-last


def test_given_values_win_and_the_record_keeps_what_was_used():
    s = _resolve(lr=0.01, opt="adamw", weight_decay=0.0, ema_decay=0.0, clip_grad=2.0, time_budget_min=1.5,
                 channels_last="off", teachers=["t.safetensors"], distill_temperature=2.0,
                 progressive_sizes=[16, 28])
    assert (s.lr, s.opt, s.weight_decay, s.ema_decay, s.clip_grad) == (0.01, "adamw", 0.0, 0.0, 2.0)
    assert s.time_budget_s == 90.0 and s.channels_last is False and s.progressive_sizes == (16, 28)
    assert (s.distill.weight, s.distill.temperature) == (0.5, 2.0)
    record = s.to_dict()
    assert record["progressive_sizes"] == [16, 28] and record["amp"] == "off" and record["device"] == "cpu"
    assert record["distill"] == {"teachers": ["t.safetensors"], "weight": 0.5, "temperature": 2.0}
    assert "workers" not in record and "decay_rate" not in record  # they do not change the result
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lr = 1.0  # type: ignore[misc]
    assert isinstance(s, Settings)


def test_sgd_on_a_batch_normed_pooled_head_gets_a_gradient_bound():
    assert _resolve("mobilenet_v4_conv_small").clip_grad == 1.0
    assert _resolve("mobilenet_v4_conv_small", opt="adamw").clip_grad == 0.0


@pytest.mark.parametrize("bad, message", [
    (dict(amp="fp8"), "--amp must be auto, off, bf16 or fp16, got 'fp8'"),
    (dict(channels_last="yes"), "--channels-last must be auto, on or off, got 'yes'"),
    (dict(recipe="fast"), "unknown recipe 'fast'; accepted: paper, default"),
    (dict(distill_temperature=0.0, teachers=["t"]), "--distill-temperature must be > 0, got 0.0"),
    (dict(resume=True, overwrite=True), "resume and overwrite exclude each other"),
])
def test_modes_are_refused_when_the_config_is_made(bad, message):
    """Before any data is read: TrainConfig checks itself when made."""
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        TrainConfig(**bad)


@pytest.mark.parametrize("name, smoothing, ema", [
    ("mobilenet_v3_small", RECIPES["default"].label_smoothing, RECIPES["default"].ema_decay),
    ("lraspp_mobilenet_v3_small", 0.0, RECIPES["default"].ema_decay),
    ("ssdlite_mobilenet_v3_small", 0.0, 0.0),  # torchvision's detection references: no smoothing, no EMA
])
def test_a_task_replaces_the_recipe_defaults_it_does_not_want(name, smoothing, ema):
    model = mobilenets.create_model(name, width_mult=0.35, num_classes=11)
    task = task_for_model(name)

    def resolve(**config):
        return resolve_settings(TrainConfig(model=name, **config), model=model, image_size=64, world_size=1,
                                device=torch.device("cpu"), task=task)

    s = resolve()
    assert (s.label_smoothing, s.ema_decay) == (smoothing, ema)
    assert resolve(ema_decay=0.99).ema_decay == 0.99  # a given value wins
