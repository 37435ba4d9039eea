"""Every folder and file writer survives a crash at any write, rename or removal.

For each writer: save version 1, then for every operation N of saving version 2, crash at N
(and at everything after, as a dead process would) and check the reader gets version 1 or
version 2 whole, never a mix; then a clean save of version 2 works.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer
from crash import Crash, count_operations, crash_at

from reptune.io import read_json, recover_folder
from reptune.vectors import SteeringVectors


def _vectors(version: int) -> SteeringVectors:
    g = torch.Generator().manual_seed(version)
    return SteeringVectors(
        {1: torch.randn(32, generator=g), 2: torch.randn(32, generator=g)},
        {"model_name": f"v{version}", "num_layers": 4, "diagnostics": {1: {"accuracy": 1.0}}},
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- writers: (write(target, version), read(target) -> a value naming the version) ----------
def _save_vectors(target, version):
    _vectors(version).save(target)


def _read_vectors(target):
    vecs = SteeringVectors.load(target)
    return vecs.metadata["model_name"], [vecs[k].sum().item() for k in vecs.layers]


def _fake_plot(rows, path, *args, **kwargs):
    """Stands in for a matplotlib plot (same single atomic write, without the drawing time)."""
    from reptune.io import atomic_write

    data = repr(rows).encode()
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _rows(version):
    return [
        {"layer": 1, "mode": "add", "coefficient": c, "condition": "none", "target_rate": r}
        for c, r in ((-1.0, 0.1 * version), (1.0, 0.2 * version))
    ]


def _report(version):
    from reptune.reporting.report import Report

    rows = _rows(version)
    report = Report(f"v{version}", model={"spec": "tiny"})
    sec = report.section("Sweep", "text")
    sec.add_table("sweep", rows)
    sec.add_table("other", [{"version": version}])
    sec.add_plot(_fake_plot(rows, report.plot_path("sweep.png")), "sweep")
    report.add_metric("rate", 0.1 * version)
    return report


def _write_report(target, version):
    _report(version).write(target)


def _read_report(target):
    recover_folder(target)
    doc = read_json(target / "report.json")
    version = int(doc["title"][1:])
    # Every file of the report must belong to the same version.
    assert read_json(target / "tables" / "other.json") == [{"version": version}]
    rates = [row["target_rate"] for row in read_json(target / "tables" / "sweep.json")]
    assert rates == pytest.approx([0.1 * version, 0.2 * version])
    assert f"v{version}" in (target / "report.md").read_text()
    plot = target / doc["sections"][0]["plots"][0]
    assert plot.read_bytes() == repr(_rows(version)).encode()
    return version


def result_rows(version):
    return [
        {"layer": 1, "mode": "add", "coefficient": 0.0, "condition": "none", "target_rate": r}
        for r in (0.1 * version, 0.3)
    ]


def _write_sweep(target, version):
    from unittest import mock

    from reptune.evaluation.studies.sweep import SweepResult

    result = SweepResult()
    result.rows = result_rows(version)
    from reptune.reporting.plots import save_sweep

    with mock.patch("reptune.reporting.plots.plot_sweep", _fake_plot):
        save_sweep(result, target, "sweep")


def _read_sweep(target):
    recover_folder(target)
    rows = read_json(target / "sweep.json")
    version = round(rows[0]["target_rate"] / 0.1)
    assert (target / "sweep.csv").read_text().splitlines()[1].endswith(str(rows[0]["target_rate"]))
    assert (target / "sweep.png").read_bytes() == repr(result_rows(version)).encode()
    return version


def _write_gguf(target, version):
    from reptune.publish.gguf_export import export_control_vector

    export_control_vector(_vectors(version), target / "cv.gguf", "llama", coefficient_unit="raw")


def _read_gguf(target):
    from reptune.publish.gguf_export import load_control_vector

    vecs = load_control_vector(target / "cv.gguf")
    return [round(vecs[k].sum().item(), 4) for k in vecs.layers]


def _write_plot(target, version):
    from reptune.analysis.diagnostics import plot_layer_accuracy

    vecs = _vectors(version)
    vecs.metadata["diagnostics"] = {1: {"accuracy": 0.5, "explained_variance": 0.1 * version}}
    plot_layer_accuracy(vecs, target / "acc.png")


def _read_plot(target):
    return _digest(target / "acc.png")


def _write_card(target, version):
    from reptune.publish.card import write_model_card

    write_model_card(target, repo_id=f"someone/tiny-v{version}")


def _read_card(target):
    return "tiny-v2" in (target / "README.md").read_text()


WRITERS = {
    "vectors": (_save_vectors, _read_vectors),
    "report": (_write_report, _read_report),
    "sweep": (_write_sweep, _read_sweep),
    "gguf": (_write_gguf, _read_gguf),
    "plot": (_write_plot, _read_plot),
    "card": (_write_card, _read_card),
}


def _fresh(tmp_path: Path, name: str, write) -> Path:
    target = tmp_path / name / "out"
    if target.parent.exists():
        shutil.rmtree(target.parent)
    if name == "card":
        from test_workflow_layout import make_run

        target = make_run(target.parent)
    write(target, 1)
    return target


def _check_every_crash_point(tmp_path, name, write, read):
    first = _fresh(tmp_path, name, write)
    v1 = read(first)
    total = count_operations(lambda: write(first, 2))
    v2 = read(first)
    assert v1 != v2 and total > 0
    for n in range(1, total + 1):
        target = _fresh(tmp_path, name, write)
        with pytest.raises(Crash), crash_at(n):
            write(target, 2)
        assert read(target) in (v1, v2), f"crash at operation {n} of {total} left a mixed folder"
        write(target, 2)  # the next save works and wins
        assert read(target) == v2
    return total


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_crash_at_any_operation_leaves_a_loadable_version(tmp_path, name):
    write, read = WRITERS[name]
    assert _check_every_crash_point(tmp_path, name, write, read) >= 1


def test_extract_command_folder_survives_a_crash(tmp_path, monkeypatch):
    """Vectors and their diagnostic plots form one folder, written whole."""
    import reptune.analysis.diagnostics
    import reptune.models
    from reptune.commands import extract

    model, tok = make_model(), make_tokenizer()
    monkeypatch.setattr(reptune.models, "load_model", lambda *a, **k: (model, tok))
    monkeypatch.setattr(reptune.models, "check_model_options", lambda *a, **k: None)
    # Plots stand in for matplotlib's (the same single atomic write each).
    monkeypatch.setattr(reptune.analysis.diagnostics, "plot_layer_accuracy", _fake_plot)
    monkeypatch.setattr(
        reptune.analysis.diagnostics,
        "plot_pca_scatter",
        lambda m, t, p, layer, pos, path: _fake_plot(p, path),
    )
    texts = {1: ["I love it", "I hate it"], 2: ["a happy day", "a sad day"]}

    def write(target, version):
        pairs = tmp_path / f"pairs{version}.jsonl"
        pos, neg = texts[version]
        pairs.write_text(f'{{"positive": "{pos}", "negative": "{neg}"}}\n' * 2)
        args = ["--pairs", str(pairs), "--output", str(target), "--layers", "1", "2"]
        assert extract.main(args) == 0

    def read(target):
        vecs = SteeringVectors.load(target)
        plots = sorted(p.name for p in (target / "plots").glob("*.png"))
        assert plots == ["layer_accuracy.png", "pca_layer1.png"] or plots == [
            "layer_accuracy.png",
            "pca_layer2.png",
        ]
        return vecs.metadata["data_fingerprint"]

    assert _check_every_crash_point(tmp_path, "extract", write, read) >= 4


def test_gguf_conversion_cache_survives_a_crash(tmp_path, monkeypatch):
    """A crash while converting leaves no folder that a later load would take as finished."""
    import reptune.models as models

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")

    def convert(path, out_dir):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_text("weights")
        (out_dir / models._MARKER).write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    cache = tmp_path / "cache"
    total = count_operations(lambda: models._converted_gguf(gguf, tmp_path / "count"))
    for n in range(1, total + 1):
        shutil.rmtree(cache, ignore_errors=True)
        with pytest.raises(Crash), crash_at(n):
            models._converted_gguf(gguf, cache)
        finished = [p for p in (cache / "gguf").glob("*") if (p / models._MARKER).is_file()]
        for folder in finished:  # a folder marked finished is complete
            assert (folder / "model.safetensors").read_text() == "weights"
        target = models._converted_gguf(gguf, cache)
        assert (target / "model.safetensors").read_text() == "weights"


def test_crash_helper_counts_and_fails_every_later_operation(tmp_path):
    target = tmp_path / "v"
    total = count_operations(lambda: _save_vectors(target, 1))
    assert total >= 4  # temp folder, tensors, metadata, swap
    with pytest.raises(Crash), crash_at(4) as log:
        _save_vectors(target, 2)
    assert log.crashed and len(log.ops) >= 4
    # Dead after the crash: the clean-up in `finally` could not remove the temp folder.
    assert any(p.name.startswith(".v.tmp-") for p in tmp_path.iterdir())
    assert _read_vectors(target)[0] == "v1"


def test_tuned_model_folder_survives_a_crash(tmp_path):
    """The adapter, reptune_config.json and the vectors of one save belong together."""
    from dist.rt_common import make_args, make_rows, random_vectors, tiny_model

    from reptune.training import RepTuneTrainer

    trainers = {}
    for version in (1, 2):
        model = tiny_model(lora=True, init_lora_weights=False, seed=version)
        args = make_args(tmp_path / f"args{version}", rep_weight=float(version), rep_layers=[1])
        trainers[version] = RepTuneTrainer(
            model,
            args,
            vectors=random_vectors(32, [1], seed=version),
            train_dataset=make_rows(4),
            processing_class=make_tokenizer(),
        )

    def write(target, version):
        trainers[version].save_model(str(target))

    def read(target):
        from safetensors.torch import load_file

        recover_folder(target)
        weights = load_file(str(target / "adapter_model.safetensors"))
        config = read_json(target / "reptune_config.json")
        vectors = SteeringVectors.load(target / "reptune_vectors")
        version = int(config["rep_weight"])
        assert torch.equal(vectors[1], random_vectors(32, [1], seed=version)[1])
        return version, round(sum(float(w.sum()) for w in weights.values()), 4)

    _check_every_crash_point(tmp_path, "tuned", write, read)
