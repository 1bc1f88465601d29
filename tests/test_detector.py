import logging

import numpy as np
import pytest

from edgecmg.detector import Detector
from edgecmg.errors import ConfigError, DataError, EdgeCMGError
from edgecmg.imageio import read_image


@pytest.fixture(scope="module")
def detector(small_artifact):
    det = Detector.load(small_artifact, backend="torch")
    yield det
    det.close()


def test_defects_score_higher_than_good_parts(detector, kolektor_root):
    good = [read_image(p) for p in sorted((kolektor_root / "test" / "good").iterdir())[:6]]
    bad = [read_image(p) for p in sorted((kolektor_root / "test" / "defect").iterdir())[:6]]
    good_scores = [r.score for r in detector.predict_batch(good)]
    bad_scores = [r.score for r in detector.predict_batch(bad)]
    assert np.mean(bad_scores) > np.mean(good_scores)


def test_result_schema(detector, kolektor_root):
    frame = read_image(sorted((kolektor_root / "test" / "defect").iterdir())[0])
    result = detector.predict(frame)
    assert result.anomaly_map.shape == frame.shape[:2] and result.anomaly_map.dtype == np.float32
    assert result.threshold == pytest.approx(detector.threshold)
    record = result.to_dict()
    for key in ("score", "is_anomaly", "threshold", "kept_mask", "frame_index", "timestamp",
                "capture_wait_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"):
        assert key in record
    assert result.timings.inference > 0
    # predict has no capture: not measured is null, not a 0 that reads like a measurement
    assert record["latency_ms"] is None and record["capture_wait_ms"] is None and record["total_ms"] > 0
    overlay = result.overlay()
    assert overlay.shape == frame.shape and overlay.dtype == np.uint8


def test_threshold_override(small_artifact, kolektor_root):
    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    fitted = Detector.load(small_artifact, backend="torch")
    score = fitted.predict(frame).score
    for threshold in (score - 1.0, score + 1.0, 0.0):  # 0.0 must not read as "unset"
        det = Detector.load(small_artifact, backend="torch", threshold=threshold)
        result = det.predict(frame)
        assert det.threshold == pytest.approx(threshold) and result.threshold == pytest.approx(threshold)
        assert result.is_anomaly == (result.score >= threshold)
    assert not Detector.load(small_artifact, backend="torch", threshold=score + 1.0).predict(frame).is_anomaly


@pytest.mark.parametrize("bad, names", [(np.zeros((10, 10, 5), np.uint8), r"shape \(10, 10, 5\) is not an image"),
                                        (np.full((10, 10, 3), 2.0, np.float32), r"float frame .* \[0, 1\]"),
                                        (np.zeros((10, 10, 3), object), "numeric"),
                                        ("frame.png", "got the str 'frame.png'.*read_image"),
                                        (np.zeros((0, 5, 3), np.uint8), "no pixels")])
def test_bad_frames_get_clear_errors(detector, bad, names):
    with pytest.raises(DataError, match=names):
        detector.predict(bad)


def test_torch_tensors_are_frames_and_channels_first_is_pointed_out(detector, kolektor_root):
    """What a PyTorch user has at hand: an HxWx3 tensor (one that requires grad too) judges as its
    array; a CxHxW one is refused with the permute to make."""
    import torch

    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    want = detector.predict(frame).score
    as_float = torch.from_numpy(frame).float().div(255).requires_grad_()
    assert detector.predict(torch.from_numpy(frame)).score == want
    assert detector.predict(as_float).score == want
    with pytest.raises(DataError, match=r"shape \(3, \d+, \d+\) is not an image.*channels-first.*"
                                        r"x\.permute\(1, 2, 0\)"):
        detector.predict(as_float.permute(2, 0, 1))
    with pytest.raises(DataError, match=r"shape \(10, 10, 5\) is not an image[^;]*$"):
        detector.predict(np.zeros((10, 10, 5), np.uint8))  # not channels-first: no such hint
    half = torch.from_numpy(frame).float().div(255)
    assert detector.predict(half.bfloat16()).score == detector.predict(half.bfloat16().float()).score  # autocast's
    with pytest.raises(DataError, match=r"frame 1: a torch.float32 tensor on meta cannot be read as a frame"):
        detector.predict_batch([frame, torch.empty(8, 8, 3, device="meta")])


def test_predict_takes_what_streams_take_gray_rgba_16_bit_and_float(detector, kolektor_root):
    """The conversions of edgecmg.imageio.to_rgb_uint8, so each form of one image scores as the RGB
    frame does, and the result's frame (for overlays) is the converted one."""
    rgb = read_image(sorted((kolektor_root / "test" / "defect").iterdir())[0])
    gray = rgb[..., 0]  # KolektorSDD is gray stored as RGB
    assert (rgb == gray[..., None]).all()
    reference = detector.predict(rgb)
    forms = [gray, gray[..., None], np.dstack([rgb, np.full(gray.shape, 255, np.uint8)]),
             gray.astype(np.uint16) * 257, gray.astype(np.float32) / 255.0]
    for form in forms:
        result = detector.predict(form)
        assert result.score == pytest.approx(reference.score, rel=1e-6), form.dtype
        assert result.frame.shape == rgb.shape and result.overlay().shape == rgb.shape


def test_predict_batch_names_the_bad_frame_and_takes_arrays_of_frames(detector, kolektor_root):
    frames = [read_image(p) for p in sorted((kolektor_root / "test" / "good").iterdir())[:2]]
    with pytest.raises(DataError, match=r"for one frame use predict\(frame\)"):
        detector.predict_batch(frames[0])
    with pytest.raises(DataError, match=r"frame 1: .*no pixels"):
        detector.predict_batch([frames[0], np.zeros((0, 4), np.uint8)])
    with pytest.raises(DataError, match="frame 0 is not an image array: got the str 'a.png'"):
        detector.predict_batch(["a.png"])
    flipped = np.ascontiguousarray(frames[0][::-1])
    stacked = detector.predict_batch(np.stack([frames[0], flipped]))  # an [N, H, W, C] array
    listed = detector.predict_batch([frames[0], flipped])
    # rel 1e-4: oneDNN's convolutions may sum a batch of 2 in another order than one image (2.3e-5 on torch 2.5)
    assert [r.score for r in stacked] == pytest.approx([r.score for r in listed], rel=1e-4)
    assert detector.predict_batch(f for f in frames)[1].score == pytest.approx(
        detector.predict(frames[1]).score, rel=1e-4)


def test_threshold_must_be_a_finite_number_and_is_checked_before_the_backend_opens(small_artifact, monkeypatch):
    from edgecmg.runtime.torch_runner import TorchRunner

    opened = []
    monkeypatch.setattr(TorchRunner, "_activate", lambda self: opened.append(self))  # nothing leaks on refusal
    for value, match in ((float("nan"), "threshold=nan \\(--threshold\\): no score is ever at or above NaN"),
                         (float("inf"), "threshold=inf \\(--threshold\\): every part would be passed"),
                         (float("-inf"), "threshold=-inf \\(--threshold\\): every part would be flagged"),
                         ("2.5", "must be a number")):
        with pytest.raises(ConfigError, match=match):
            Detector.load(small_artifact, backend="torch", threshold=value)
    assert opened == []
    monkeypatch.undo()
    det = Detector.load(small_artifact, backend="torch")
    with pytest.raises(ConfigError, match="must be a number"):
        det.threshold = "x"
    det.threshold = 2  # an int is a number
    assert det.threshold == 2.0 and isinstance(det.threshold, float)


def test_a_closed_detector_says_so(small_artifact, kolektor_root):
    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    with Detector.load(small_artifact, backend="torch") as det:
        det.predict(frame)
    assert det.closed and "closed" in repr(det)
    for use in (lambda: det.predict(frame), lambda: det.stream([frame])):
        with pytest.raises(EdgeCMGError, match=r"this Detector \(.*commutator.edgecmg\) is closed"):
            use()


def test_a_detector_closed_by_another_thread_mid_call_says_so(small_artifact, kolektor_root, held_call):
    """close() lands after predict's open check, before its backend call: the caller hears that the
    Detector is closed, in the Detector's words, not the runner's 'not active' ones."""
    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    det = Detector.load(small_artifact, backend="torch")
    call = held_call(det, "prepare", lambda: det.predict(frame))
    det.close()
    call.release.set()
    call.thread.join(10)
    error = str(call.outcome["error"])
    assert "is closed" in error and "not active" not in error


def test_reprs_are_one_line_summaries(detector, kolektor_root):
    text = repr(detector)
    assert text.startswith("Detector(") and "backend='torch'" in text and "input=256x96" in text
    result = detector.predict(read_image(sorted((kolektor_root / "test" / "defect").iterdir())[0]))
    text = repr(result)
    assert "\n" not in text and "map=" in text and f"is_anomaly={result.is_anomaly}" in text
    assert len(text) < 300  # the dataclass default printed the whole anomaly map


def test_stream_over_a_real_video_file_loses_no_frame(detector, kolektor_root, tmp_path):
    import cv2

    video = tmp_path / "line.avi"
    frames = [read_image(p) for p in sorted((kolektor_root / "test" / "good").iterdir())[:12]]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(cv2.resize(f, (w, h)), cv2.COLOR_RGB2BGR))
    writer.release()
    with detector.stream(str(video), policy="all", batch=4) as run:
        results = list(run)
    assert [r.frame_index for r in results] == list(range(12))
    assert run.stats.frames_dropped == 0


def test_a_streamed_list_is_indexed_by_position_and_bgr_frames_judge_as_predict_judges_them(detector,
                                                                                             kolektor_root):
    """frame_index maps each result back to its item (the skipped ones counted); bgr=True streams the
    frames of one's own cv2.VideoCapture as predict(bgr=True) judges them."""
    import cv2

    paths = sorted((kolektor_root / "test" / "defect").iterdir())[:3]
    # Tinted: the KolektorSDD parts are gray, where the channel order changes nothing.
    colour = [np.rint(read_image(p) * np.array([1.0, 0.6, 0.2])).astype(np.uint8) for p in paths]
    items = [colour[0], None, colour[1], np.zeros((0, 5, 3), np.uint8), colour[2]]
    with detector.stream(items) as run:
        results = list(run)
    assert [r.frame_index for r in results] == [0, 2, 4]
    assert run.stats.corrupt_skipped == 2
    expected = [detector.predict(f).score for f in colour]
    assert [r.score for r in results] == pytest.approx(expected)

    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in colour]
    with detector.stream(iter(bgr), bgr=True) as run:
        scores = [r.score for r in run]
    assert scores == pytest.approx(expected)
    assert scores == pytest.approx([detector.predict(f, bgr=True).score for f in bgr])
    with detector.stream(bgr) as run:  # the same frames taken as RGB: another part to the model
        assert [r.score for r in run] != pytest.approx(expected)
    for source in (str(kolektor_root / "test" / "good"), [str(paths[0])], 0):
        with pytest.raises(ConfigError, match="bgr=True is for frames passed in memory .* leave bgr unset"):
            detector.stream(source, bgr=True)


@pytest.mark.parametrize("items, said", [
    ([], r"frames:list: the frames given hold no item \(an empty list"),
    ([None, None], r"frames:list: each of its 2 item\(s\) was None \(no frame\)"),
    (iter([]), r"frames:list_iterator: the frames given hold no item"),
])
def test_a_stream_of_frames_with_none_to_judge_is_an_error_not_a_quiet_line(detector, items, said):
    from edgecmg.errors import StreamError

    with pytest.raises(StreamError, match=said):
        with detector.stream(items) as run:
            list(run)


def test_a_frame_far_smaller_than_the_input_is_said_once_instead_of_a_stretch(detector, caplog):
    """An empty or misplaced crop (1x500, 4x4) is named for what it is, once per size; a frame of an
    eighth of the input is not."""
    in_h, in_w = detector.input_size
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        for shape in ((1, 500), (1, 500), (4, 4), (in_h // 8, in_w // 8)):
            detector.predict(np.full((*shape, 3), 90, np.uint8))
    tiny = [r.getMessage() for r in caplog.records if "blown up" in r.getMessage()]
    assert len(tiny) == 2 and "a 1x500 frame (height x width) is judged blown up to the model's input of " \
        f"{in_h}x{in_w}, more than 8x on a side" in tiny[0] and "a 4x4 frame" in tiny[1]
    assert not [r for r in caplog.records if "stretches" in r.getMessage() and "1x500" in r.getMessage()]


def test_a_detector_refuses_pickling_saying_to_load_it_in_each_process(detector):
    import copy
    import pickle

    for attempt in (lambda: pickle.dumps(detector), lambda: copy.deepcopy(detector), lambda: copy.copy(detector)):
        with pytest.raises(TypeError, match=r"a Detector cannot be pickled or copied: it holds a loaded torch "
                                            r"session; .*call Detector.load\(.*\) there"):
            attempt()


def test_stream_join_timeout_is_checked(detector):
    for bad in (-1, 0, float("nan"), "5", True):
        with pytest.raises(ConfigError, match=r"join_timeout_s=.*a number above 0 \(default 5\)"):
            detector.stream([np.zeros((8, 8, 3), np.uint8)], join_timeout_s=bad)


def test_stream_options_beside_a_config_are_refused_by_name(detector, kolektor_root):
    from edgecmg.config import StreamConfig

    with pytest.raises(ConfigError, match=r"policy, batch given beside config=.*StreamConfig\(policy='latest', batch=2\)"):
        detector.stream(str(kolektor_root / "test" / "good"), policy="latest", batch=2, config=StreamConfig())
    with detector.stream(str(kolektor_root / "test" / "good"), config=StreamConfig(loop=False, batch=2)) as run:
        assert run.pipeline.config.batch == 2 and run.pipeline.config.policy == "all"


def _small_part(kolektor_root, root, *, count: int, masked: int) -> list:
    """An MVTec-layout copy of ``count`` good and ``count`` defective KolektorSDD test images, the last
    ``masked`` defects with their masks; returns the defect images' paths in the source."""
    import shutil

    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "defect").mkdir()
    (root / "ground_truth" / "defect").mkdir(parents=True)
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:count]:
        shutil.copy(path, root / "test" / "good")
    defects = sorted((kolektor_root / "test" / "defect").iterdir())[:count]
    for i, path in enumerate(defects):
        shutil.copy(path, root / "test" / "defect")
        if i >= count - masked:
            shutil.copy(kolektor_root / "ground_truth" / "defect" / f"{path.stem}_mask.png",
                        root / "ground_truth" / "defect")
    return defects


def test_eval_survives_a_damaged_mask(detector, kolektor_root, tmp_path, caplog):
    from edgecmg.datasets import MVTecDataset
    from edgecmg.evaluation import evaluate_detector

    root = tmp_path / "part"
    defects = _small_part(kolektor_root, root, count=2, masked=2)
    damaged = root / "ground_truth" / "defect" / f"{defects[0].stem}_mask.png"
    damaged.write_bytes(damaged.read_bytes()[:40])  # truncated on copy
    with caplog.at_level("WARNING", logger="edgecmg"):
        metrics = evaluate_detector(detector, MVTecDataset(root).test_samples(), progress=False)
    assert metrics["images"] == 4 and metrics["skipped"] == []
    assert metrics["masks_skipped"] == [str(damaged)] and "mask skipped" in caplog.text
    assert metrics["image_auroc"] is not None and metrics["pixel_auroc"] is not None


def test_eval_pixel_metrics_match_the_metrics_module_with_an_unknown_mask_left_out(detector, kolektor_root,
                                                                                 tmp_path, caplog):
    """evaluate_detector fills one array of maps in place; its figures must be those of metrics.evaluate
    given the same maps as lists, where a defect image without a mask is left out of the pixel metrics."""
    import cv2

    from edgecmg.datasets import MVTecDataset, sample_mask
    from edgecmg.evaluation import evaluate_detector, resize_mask
    from edgecmg.imageio import read_image
    from edgecmg.metrics import evaluate

    root = tmp_path / "part"
    _small_part(kolektor_root, root, count=3, masked=2)  # the first defect has no mask: unknown, not defect-free
    samples = MVTecDataset(root).test_samples()
    with caplog.at_level("WARNING", logger="edgecmg"):
        metrics = evaluate_detector(detector, samples, progress=False)
    assert "1 defect image(s) without a mask left out" in caplog.text

    height, width = detector.input_size
    labels, scores, masks, maps = [], [], [], []
    for sample in samples:
        frame = read_image(sample.path)
        result = detector.predict(frame)
        labels.append(sample.label)
        scores.append(result.score)
        mask = sample_mask(sample, frame.shape[:2])
        masks.append(None if mask is None else resize_mask(mask, (height, width)))
        maps.append(cv2.resize(result.anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR))
    assert sum(m is None for m in masks) == 1
    expected = evaluate(labels, scores, masks, maps)
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-12), key
    assert expected["pixel_auroc"] is not None


def test_eval_reports_the_decisions_at_the_threshold(detector, kolektor_root):
    from edgecmg.datasets import MVTecDataset
    from edgecmg.evaluation import evaluate_detector

    samples = MVTecDataset(kolektor_root).test_samples()
    samples = [s for s in samples if s.label == 0][:4] + [s for s in samples if s.label == 1][:4]
    metrics = evaluate_detector(detector, samples, progress=False, per_image=True)
    records = metrics["per_image"]
    assert metrics["threshold"] == pytest.approx(detector.threshold)
    assert metrics["good_flagged"] == sum(r["is_anomaly"] and r["label"] == 0 for r in records)
    assert metrics["defects_missed"] == sum(not r["is_anomaly"] and r["label"] == 1 for r in records)


def test_a_frame_of_another_shape_than_the_training_images_is_warned_about_once(small_artifact, kolektor_root,
                                                                                 featurizer_onnx, caplog):
    part = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])  # tall, as the training parts
    wide = np.ascontiguousarray(part.transpose(1, 0, 2))  # the same part on its side: 2.5x wider than tall
    for path, backend in ((small_artifact, "torch"), (featurizer_onnx, "onnxruntime")):
        with Detector.load(path, backend=backend) as det:
            caplog.clear()
            det.predict(part)
            assert "stretches" not in caplog.text
            det.predict(wide)
            det.predict_batch([wide, wide])
            warnings = [r.getMessage() for r in caplog.records if "stretches the part" in r.getMessage()]
            assert len(warnings) == 1, warnings
            w, h = wide.shape[1], wide.shape[0]
            assert f"a {h}x{w} frame (height x width)" in warnings[0] and "crop frames to the part" in warnings[0]


@pytest.mark.parametrize("off, warns", [(1.04, True), (1 / 1.04, False)])
@pytest.mark.parametrize("way", ["taller", "wider"])
def test_the_stretch_warning_starts_past_the_aspect_tolerance(detector, kolektor_root, caplog, off, warns, way):
    """A frame 1.3x off the training images' height/width (ASPECT_TOLERANCE 1.25 x 1.04) is warned about,
    one 1.2x off (1.25 / 1.04) is not, whichever way it is off."""
    import cv2

    from edgecmg.config import ASPECT_TOLERANCE

    trained = detector.metadata["training"]["aspect_hw"]
    stretch = ASPECT_TOLERANCE * off
    aspect = trained * stretch if way == "taller" else trained / stretch
    w = 401 if warns else 403  # a frame size of its own: each size is checked once per detector
    h = round(w * aspect)
    part = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    caplog.clear()
    detector.prepare(cv2.resize(part, (w, h), interpolation=cv2.INTER_AREA))
    warnings = [r.getMessage() for r in caplog.records if "stretches the part" in r.getMessage()]
    if warns:
        assert len(warnings) == 1 and f"a {h}x{w} frame (height x width)" in warnings[0]
        assert f"stretches the part {stretch:.2f}x" in warnings[0]
    else:
        assert warnings == []


def test_a_score_exactly_at_the_threshold_is_an_anomaly(detector, kolektor_root):
    import dataclasses

    result = detector.predict(read_image(sorted((kolektor_root / "test" / "good").iterdir())[0]))
    at = dataclasses.replace(result, threshold=result.score)
    assert at.is_anomaly and at.to_dict()["is_anomaly"] is True
    above = dataclasses.replace(result, threshold=float(np.nextafter(result.score, np.inf)))
    assert not above.is_anomaly
    with Detector.load(detector.runner.model_path, backend="torch", threshold=result.score) as det:
        assert det.predict(result.frame).is_anomaly  # the same frame, judged at its own score


def test_from_model_refuses_what_is_not_a_fitted_model_by_name(small_fit, small_artifact, kolektor_root):
    import torch

    from edgecmg.errors import BackendUnavailableError

    model, metadata = small_fit
    for args, match in (((str(small_artifact), metadata), "not a file .*Detector.load"),
                        ((metadata, model), "other way round"),
                        (("x", None), "not a file"),
                        ((42, metadata), "CMGModel that edgecmg.fit.fit returns, got int"),
                        ((model, None), "from_model needs the metadata dict fit returned with the model, got NoneType"),
                        ((model, {}), "got dict without input_size, threshold")):
        with pytest.raises(ConfigError, match=match):
            Detector.from_model(*args)
    with pytest.raises(ConfigError, match="device='gpu'"):
        Detector.from_model(model, metadata, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="device='cuda': this torch has no CUDA"):
            Detector.from_model(model, metadata, device="cuda")
    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    detector = Detector.from_model(model, metadata, threshold=0.0)
    assert detector.predict(frame).overlay().shape == frame.shape
    # device=None, as in Detector.load: the GPU where torch sees one
    assert detector.runner.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_device_is_taken_as_torch_takes_it(small_fit, small_artifact):
    """A torch.device and an index N (CUDA device N) as well as the strings; the device is read back."""
    import torch

    from edgecmg.errors import BackendUnavailableError

    model, metadata = small_fit
    with Detector.from_model(model, metadata, device=torch.device("cpu")) as det:
        assert det.device == "cpu"
    with Detector.load(small_artifact, backend="torch", device=torch.device("cpu")) as det:
        assert det.device == "cpu" and "device='cpu'" in repr(det)
    from edgecmg.runtime.registry import device_name

    assert [device_name(d) for d in (None, "cpu", 0, np.int64(1), torch.device("cuda", 1), torch.device("cpu"))] == \
        [None, "cpu", "cuda:0", "cuda:1", "cuda:1", "cpu"]
    for bad, error in ((True, ConfigError), (-1, ConfigError), (2.0, ConfigError)):
        with pytest.raises(error, match=r"device=.*use 'cpu', 'cuda', 'cuda:N', a torch.device or a CUDA index N"):
            Detector.load(small_artifact, backend="torch", device=bad)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="torch-cuda cannot run here"):
            Detector.load(small_artifact, backend="torch", device=1)
        with pytest.raises(BackendUnavailableError, match="device='cuda:0': this torch has no CUDA"):
            Detector.from_model(model, metadata, device=torch.device("cuda", 0))


def test_bgr_frames_from_opencv_are_judged_as_their_rgb_twin(detector, kolektor_root):
    """A colour part (a gray one tinted in one channel): OpenCV's BGR order with bgr=True judges as
    the RGB frame; without it, the swapped channels score differently."""
    import cv2

    rgb = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0]).copy()
    rgb[..., 0] = np.clip(rgb[..., 0].astype(int) + 60, 0, 255)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    want = detector.predict(rgb)
    got = detector.predict(bgr, bgr=True)
    assert got.score == want.score and np.array_equal(got.anomaly_map, want.anomaly_map)
    assert np.array_equal(got.frame, rgb)  # the result holds the RGB frame
    assert detector.predict(bgr).score != want.score
    assert [r.score for r in detector.predict_batch([bgr, bgr], bgr=True)] == [want.score] * 2
    # prepared frames are used as given: bgr beside them would be silently ignored, so it is refused
    with pytest.raises(ConfigError, match=r"prepared=\.\.\., bgr=True.*COLOR_BGR2RGB"):
        detector.predict_batch([bgr], prepared=[detector.prepare(bgr)], bgr=True)


def test_an_overlay_is_drawn_over_the_frame_as_predict_took_it(detector, kolektor_root):
    """A float or 16-bit frame, as predict() takes them, draws as its uint8 twin does."""
    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    result = detector.predict(frame)
    want = result.overlay(frame)
    assert np.array_equal(result.overlay(frame.astype(np.float32) / 255), want)
    assert np.array_equal(result.overlay(frame.astype(np.uint16) * 257), want)
    with pytest.raises(DataError, match="float frame must hold finite values"):
        result.overlay(frame.astype(np.float32))  # 0..255 floats: refused as predict refuses them


def test_a_score_that_is_not_a_number_is_an_anomaly_and_null_in_json():
    """A NaN score (a broken input or model) fails safe: `NaN >= threshold` is False and would pass
    the part; and its JSON line stays JSON (json.dumps writes NaN, which jq refuses)."""
    import json

    from edgecmg.result import Result

    result = Result(score=float("nan"), threshold=2.5, anomaly_map=np.full((4, 4), np.nan, np.float32),
                    kept_mask=np.ones((2, 2), bool))
    assert result.is_anomaly
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["score"] is None and record["map_max"] is None and record["is_anomaly"] is True
    assert not Result(score=2.4, threshold=2.5, anomaly_map=np.zeros((4, 4), np.float32),
                      kept_mask=np.ones((2, 2), bool)).is_anomaly


def test_results_compare_by_identity(detector, kolektor_root):
    """Two verdicts on one frame hold equal scores; == must not reach the arrays inside (it raised)."""
    frame = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    first, second = detector.predict(frame), detector.predict(frame)
    assert first.score == second.score
    assert first == first and first != second and [first, second].index(second) == 1


def test_what_is_not_a_frame_is_named_briefly_and_pointed_the_right_way(detector, kolektor_root, tmp_path):
    path = sorted((kolektor_root / "test" / "good").iterdir())[0]
    frame = read_image(path)
    encoded = path.read_bytes()
    for call in (lambda: detector.predict(encoded), lambda: detector.predict_batch([encoded])):
        with pytest.raises(DataError, match=rf"{len(encoded):,} bytes \(an encoded file\?\): decode them") as info:
            call()
        assert len(str(info.value)) < 400  # not the bytes' repr (150,000 characters for a 52 KB JPEG)
    with pytest.raises(DataError, match=r"predict\(\) takes one frame, got a list of 2; .*predict_batch"):
        detector.predict([frame, frame])
    with pytest.raises(DataError, match=r"the str 'x{119}\.\.\.; read files"):
        detector.predict("x" * 500)
    prepared = detector.prepare(frame)
    with pytest.raises(DataError, match="prepared holds 1 frames for 2 frames"):
        detector.predict_batch([frame, frame], prepared=[prepared])
    with pytest.raises(DataError, match=r"prepared frame 1 is uint8 \(\d+, \d+, 3\), not uint8"):
        detector.predict_batch([frame, frame], prepared=[prepared, frame])
    assert detector.predict_batch([frame], prepared=[prepared])[0].score == pytest.approx(
        detector.predict(frame).score, rel=1e-6)


def test_a_config_of_the_wrong_type_is_refused_with_how_to_make_one(small_artifact, kolektor_train, tmp_path,
                                                                     detector):
    from edgecmg.config import EngineConfig, ExportConfig, ModelConfig, StreamConfig
    from edgecmg.engine import build_engine
    from edgecmg.export import export_onnx
    from edgecmg.fit import fit

    with pytest.raises(ConfigError, match=r"fit\(images, config\) takes a ModelConfig as config, got str: pass "
                                          r"ModelConfig\(prompt='a photo of a metal commutator'\)"):
        fit(kolektor_train[:8], "a photo of a metal commutator")
    with pytest.raises(ConfigError, match=r"export_onnx takes an ExportConfig as config, got dict: pass "
                                          r"ExportConfig\(\*\*\{'with_scoring': True\}\)"):
        export_onnx(small_artifact, tmp_path / "x.onnx", {"with_scoring": True})
    with pytest.raises(ConfigError, match="build_engine takes an EngineConfig as config, got str"):
        build_engine(tmp_path / "x.onnx", "fp16")
    with pytest.raises(ConfigError, match=r"stream\(\) takes a StreamConfig as config, got dict"):
        detector.stream([], config={"batch": 2})
    with pytest.raises(ConfigError, match="threads='2' must be an integer >= 1"):
        Detector.load(small_artifact, threads="2")
    assert not (tmp_path / "x.onnx").exists()
    assert isinstance(ModelConfig(), ModelConfig) and ExportConfig() and EngineConfig() and StreamConfig()


def test_a_missing_file_is_also_a_file_not_found_error(tmp_path):
    """``except FileNotFoundError`` (or OSError), Python's idiom, catches edgecmg's missing files too."""
    from edgecmg.errors import MissingFileError

    for call in (lambda: Detector.load(tmp_path / "nope.edgecmg"), lambda: read_image(tmp_path / "nope.png")):
        with pytest.raises(FileNotFoundError, match="nope") as info:
            call()
        assert isinstance(info.value, MissingFileError) and isinstance(info.value, DataError)


def test_device_name_refuses_a_device_class_that_is_not_torchs():
    from edgecmg.runtime.registry import device_name

    device = type("device", (), {"__module__": "somelib", "__str__": lambda self: "cuda:0"})
    with pytest.raises(ConfigError, match=r"device=.*use 'cpu', 'cuda', 'cuda:N', a torch.device"):
        device_name(device())


def test_detector_device_is_the_runners(small_fit, monkeypatch):
    from edgecmg.detector import Detector

    model, metadata = small_fit
    with Detector.from_model(model, metadata, device="cpu") as det:
        monkeypatch.setattr(det.runner, "device", "cuda:1")
        assert det.device == "cuda:1"


def test_map_size_model_keeps_the_models_map_and_changes_nothing_else(small_artifact, small_fit, kolektor_root):
    """At 12 MP the frame-sized map is 48 MB a frame of host work a line may not want."""
    path = sorted((kolektor_root / "test" / "defect").iterdir())[0]
    frame = read_image(path)
    with Detector.load(small_artifact, backend="torch") as full, \
            Detector.load(small_artifact, backend="torch", map_size="model") as own:
        big, small = full.predict(frame), own.predict(frame)
        assert big.anomaly_map.shape == frame.shape[:2] and small.anomaly_map.shape == own.input_size
        assert small.score == big.score and small.anomaly_map.dtype == np.float32
        np.testing.assert_array_equal(small.overlay(), big.overlay())  # overlay() resizes as predict did
        assert [r.anomaly_map.shape for r in own.predict_batch([frame, frame[:200]])] == [own.input_size] * 2
        with own.stream([frame]) as run:
            assert next(run).anomaly_map.shape == own.input_size
        own.map_size = "frame"
        assert own.predict(frame).anomaly_map.shape == frame.shape[:2]
        for odd in ("input", None, 256):
            with pytest.raises(ConfigError, match=rf"map_size={odd!r}: give 'frame' .* or 'model'"):
                own.map_size = odd
    model, metadata = small_fit
    with pytest.raises(ConfigError, match="map_size='full'"):
        Detector.from_model(model, metadata, device="cpu", map_size="full")
    assert Detector.from_model(model, metadata, device="cpu", map_size="model").predict(frame).anomaly_map.shape == \
        tuple(metadata["input_size"])


def test_spin_turns_onnx_runtimes_spin_waiting_off_or_on(small_artifact, tmp_path, monkeypatch):
    """A paced stream on spinning threads took about three times the CPU per frame (the README's
    "CPU use between frames"); spin=False is how a user who shares the cores turns that off."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
    for spin, entry in ((None, ""), (False, "0"), (True, "")):
        with Detector.load(small_artifact, backend="onnxruntime", spin=spin) as detector:
            options = detector.runner._session.get_session_options()
            try:
                set_to = options.get_session_config_entry("session.intra_op.allow_spinning")
            except RuntimeError:  # not set: ONNX Runtime's default, spinning
                set_to = ""
            assert set_to == entry, spin
            detector.predict(np.zeros((64, 64, 3), np.uint8))
    with Detector.load(small_artifact, backend="torch", spin=False) as detector:  # no such setting: ignored
        assert detector.backend == "torch"
    with pytest.raises(ConfigError, match=r"spin='no' must be True, False or None"):
        Detector.load(small_artifact, spin="no")
