"""BadNets and label flipping: the poisons do what they claim, the clean model shows no backdoor,
and bad settings are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import run_cli
from _poisoning import RATE, TARGET, TRIGGER, train_digits

from gibbon import zoo
from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.backdoor import attack_success_rate, badnets_poison
from gibbon.poisoning.label_flip import class_accuracy, flip_labels
from gibbon.poisoning.triggers import Trigger, apply_trigger, parse_trigger, trigger_mask_and_pattern


def test_patch_trigger_stamps_only_its_square():
    x = torch.rand(3, 1, 8, 8)
    stamped = apply_trigger(x, Trigger(size=3, margin=1, pattern="solid"))
    changed = (stamped != x).any(0)[0]
    assert changed[4:7, 4:7].all() and int(changed.sum()) == 9
    assert torch.equal(stamped[:, :, 4:7, 4:7], torch.ones(3, 1, 3, 3))


def test_blend_trigger_mixes_everywhere_with_its_opacity():
    x = torch.zeros(2, 3, 6, 6)
    mask, pattern = trigger_mask_and_pattern(Trigger(kind="blend", alpha=0.25, pattern="noise", seed=3), (3, 6, 6))
    stamped = apply_trigger(x, Trigger(kind="blend", alpha=0.25, pattern="noise", seed=3))
    assert torch.allclose(stamped[0], 0.25 * pattern) and torch.allclose(mask, torch.full((3, 6, 6), 0.25))


def test_badnets_poisons_the_asked_share_of_non_target_rows(digit_splits, poisoned_digits):
    train = digit_splits[0]
    rows = poisoned_digits.poison_indices
    assert len(rows) == round(RATE * len(train.y)) and bool((poisoned_digits.original_labels != TARGET).all())
    assert bool((poisoned_digits.dataset.y[rows] == TARGET).all())
    untouched = ~poisoned_digits.poison_mask
    assert torch.equal(poisoned_digits.dataset.x[untouched], train.x[untouched])
    assert torch.equal(poisoned_digits.dataset.y[untouched], train.y[untouched])


def test_the_backdoored_model_obeys_the_trigger_and_the_clean_one_does_not(digit_splits, backdoored_mlp, clean_mlp):
    test = digit_splits[2]
    asr = attack_success_rate(backdoored_mlp, test, TRIGGER, TARGET)
    # measured: 1.0 backdoored, 0.0 clean; a poisoning that does nothing leaves the ASR at the clean model's
    assert asr >= 0.9, asr
    assert attack_success_rate(clean_mlp, test, TRIGGER, TARGET) <= 0.1
    clean_acc, poisoned_acc = zoo.accuracy(clean_mlp, test), zoo.accuracy(backdoored_mlp, test)
    assert poisoned_acc >= clean_acc - 0.05, (clean_acc, poisoned_acc)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate=0.0), "poison rate must be a fraction in"),
    (dict(rate=1.5), "poison rate must be a fraction in"),
    (dict(target=10), r"target label must be a class index in \[0, 10\)"),
    (dict(trigger=Trigger(size=9)), "does not fit a 8x8 image"),
    (dict(trigger=Trigger(kind="blend", alpha=0)), "blend alpha"),
    (dict(trigger=Trigger(location="middle")), "trigger location"),
])
def test_bad_poisoning_settings_are_one_line_errors(digit_splits, kwargs, message):
    settings = dict(trigger=TRIGGER, target=0, rate=0.1) | kwargs
    with pytest.raises(GibbonInputError, match=message):
        badnets_poison(digit_splits[0], settings["trigger"], settings["target"], settings["rate"])


def test_parse_trigger_reads_options_and_refuses_unknown_ones():
    assert parse_trigger("patch:size=3,pattern=solid") == Trigger(size=3, pattern="solid")
    assert parse_trigger("blend:alpha=0.1").alpha == 0.1
    for spec, message in (("star", "trigger kind"), ("patch:colour=red", "unknown trigger option"),
                          ("patch:size=big", "must be a number")):
        with pytest.raises(GibbonInputError, match=message):
            parse_trigger(spec)


def test_random_flips_change_exactly_the_rate_and_never_keep_the_label(digit_splits):
    train = digit_splits[0]
    flipped = flip_labels(train, 0.2, seed=1)
    changed = flipped.dataset.y != train.y
    assert int(changed.sum()) == round(0.2 * len(train.y)) and torch.equal(changed, flipped.poison_mask)
    assert torch.equal(flipped.dataset.x, train.x)


def test_targeted_flips_hurt_the_source_class_more_than_random_flips(digit_splits):
    train, _, test = digit_splits
    targeted = flip_labels(train, 0.6, mode="targeted", source=3, target=8, seed=0)
    random = flip_labels(train, len(targeted.poison_indices) / len(train.y), seed=0)
    assert len(random.poison_indices) == len(targeted.poison_indices)
    acc_targeted = class_accuracy(train_digits("mlp-200-200", targeted.dataset), test, 3)
    acc_random = class_accuracy(train_digits("mlp-200-200", random.dataset), test, 3)
    # measured 0.17 vs 1.0: the same number of flips, concentrated, takes the class away
    assert acc_targeted < acc_random - 0.3, (acc_targeted, acc_random)


def test_flip_settings_are_checked(digit_splits):
    train = digit_splits[0]
    for kwargs, message in ((dict(mode="targeted"), "needs source and target"),
                            (dict(mode="targeted", source=3, target=3), "must differ"),
                            (dict(mode="sideways"), "flip mode"), (dict(source=1), "takes no source")):
        with pytest.raises(GibbonInputError, match=message):
            flip_labels(train, 0.1, **kwargs)


def test_train_poison_records_the_backdoor_in_the_card(monkeypatch, tmp_path):
    path = tmp_path / "bd.safetensors"
    code = run_cli(monkeypatch, "train", "--arch", "mlp-200-200", "--dataset", "digits", "--epochs", "40",
                   "--poison", "badnets:rate=0.1,target=0,size=2,margin=0", "--out", str(path))
    assert code == 0
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["poisoning"]["attack"] == "badnets" and card["poisoning"]["count"] == 120
    assert card["poisoning"]["attack_success_rate"] >= 0.8  # measured 1.0 (40 epochs of Adam)


def test_cli_poison_errors_are_one_line(monkeypatch, capsys, tmp_path):
    for args, message in ((["poison", "badnets", "--rate", "0"], "must be fractions in (0, 1]"),
                          (["poison", "badnets", "--dataset", "digits", "--trigger", "patch:size=12"], "does not fit"),
                          (["poison", "badnets", "--rate", "0.1,0.2", "--detect", "spectral"], "need a single --rate"),
                          (["poison", "flip", "--mode", "targeted"], "needs --source and --target"),
                          (["train", "--arch", "lenet5", "--poison", "badnets:target=1", "--out",
                            str(tmp_path / "m.safetensors")], "needs rate=FRACTION")):
        assert run_cli(monkeypatch, *args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
