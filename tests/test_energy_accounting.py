"""A trainer's joules are its own (sensors/gate.py): the time between its fit() calls and
another trainer's steps in the same process are never charged to it, and under an energy cap
no checkpoint is written that the budget left cannot pay for (a fleet client's rounds each
write one; only the run's last is kept back)."""

import time

import numpy as np
import pytest
from bundles import micro_bundle
from test_train import synthetic_images

import edgetune.train.trainer as trainer_module
from edgetune.bundle import Bundle
from edgetune.caps import Caps
from edgetune.devices import get_device
from edgetune.sensors.base import EnergyMeter
from edgetune.sensors.gate import GatedMeter
from edgetune.train import TrainConfig, Trainer, load_data

PI5 = get_device("raspberry-pi-5")  # no power sensor: the modelled meter, P <= 8 W


class Scripted(EnergyMeter):
    """Joules that the test adds by hand."""

    name = "scripted"

    def __init__(self):
        self.joules = 0.0

    def available(self):
        return True

    def start(self):
        self.joules = 0.0

    def read_joules(self):
        return self.joules


def test_the_gate_counts_only_open_intervals():
    inner = Scripted()
    gate = GatedMeter(inner)
    gate.start()                    # open: 2 J counted
    inner.joules += 2.0
    gate.close()
    inner.joules += 100.0           # closed: another trainer's steps, a wait between rounds
    assert gate.read_joules() == 2.0
    with gate.counting():
        inner.joules += 3.0
        assert gate.read_joules() == 5.0
    inner.joules += 50.0
    assert gate.read_joules() == 5.0 and not gate.is_open
    gate.open()
    with gate.counting():           # already open: stays open after the block
        inner.joules += 1.0
    assert gate.is_open and gate.read_joules() == 6.0
    gate.start()                    # zeroes the count
    assert gate.read_joules() == 0.0


@pytest.fixture(scope="module")
def lora():
    return Bundle.open(micro_bundle("vit-micro", "lora", num_classes=2))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return synthetic_images(tmp_path_factory.mktemp("energy") / "train.npz", n=128)


def make(lora, images, steps=40, checkpoint_every=0, **kwargs):
    cfg = TrainConfig(steps=steps, batch_size=16, lr=5e-3, threads=1, mode="adaptive", schedule="static",
                      checkpoint_every=checkpoint_every)
    return Trainer(lora, load_data(lora, images), config=cfg, device=PI5, **kwargs)


def timed_fit(t, steps):
    before, t0 = t.meter.read_joules(), time.monotonic()
    t.fit(steps=steps)
    return t.meter.read_joules() - before, time.monotonic() - t0


def test_a_trainers_joules_are_its_own_steps(lora, images):
    """The modelled meter's power is at most the profile's active watts, so a fit() that ran
    for t seconds costs at most P_active·t. A wait of 1 s between fits (2.7 J at the Pi 5's idle
    power) or another trainer's 30 steps would break that bound if they were charged."""
    a, b = make(lora, images), make(lora, images)
    a.fit(steps=2)
    idle = a.meter.read_joules()
    time.sleep(1.0)
    assert a.meter.read_joules() == idle                  # nothing counts between fit() calls
    joules, seconds = timed_fit(a, 2)
    assert 0 < joules <= PI5.active_watts * seconds, (joules, seconds)

    mine = a.meter.read_joules()
    b.fit(steps=30)                                       # another trainer in this process
    assert a.meter.read_joules() == mine and b.meter.read_joules() > 0
    joules, seconds = timed_fit(a, 2)
    assert 0 < joules <= PI5.active_watts * seconds, (joules, seconds)


STEP_J, CHECKPOINT_J = 1.0, 0.1  # under the planner's prior for a checkpoint, so the first is safe


def test_no_checkpoint_is_written_that_the_energy_cap_cannot_pay_for(lora, images, tmp_path, monkeypatch):
    """Energy comes only from steps (1 J each) and checkpoint writes (0.1 J each): exact on any
    CPU. The run stops before the step the cap cannot pay for, checkpointed; then five rounds
    that each load a state (a new revision, as a fleet's round does) run no step and write no
    checkpoint past the cap. Before the fix each round wrote one (0.5 J over a 12 J cap)."""
    meter = Scripted()
    monkeypatch.setattr(trainer_module, "make_energy_meter", lambda device: meter)
    cap = 12.0
    t = make(lora, images, steps=40, checkpoint_every=2, out=tmp_path / "run", caps=Caps(energy_joules=cap))
    step, save = t.engine.train_step, t.engine.save

    def train_step(*args, **kwargs):
        meter.joules += STEP_J
        return step(*args, **kwargs)

    def write(folder):
        meter.joules += CHECKPOINT_J
        save(folder)

    monkeypatch.setattr(t.engine, "train_step", train_step)
    monkeypatch.setattr(t.engine, "save", write)
    first = t.fit()
    assert first.stopped and "--energy-cap" in first.stopped and 0 < first.steps < 40, first
    assert t.meter.read_joules() <= cap
    written = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    state = t.trainable_state_dict()
    skipped = []
    for i in range(5):
        t.load_trainable_state_dict({n: v + 0.01 * (i + 1) for n, v in state.items()})
        result = t.fit(steps=1)
        assert result.steps_run == 0
        skipped.append("too little for a checkpoint" in (result.stopped or ""))
        assert t.meter.read_joules() <= cap, (i, t.meter.read_joules(), result.stopped)
    assert skipped[-1], skipped
    after = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert len(set(after) - set(written)) <= int(np.floor((cap - first.energy_j) / CHECKPOINT_J))
