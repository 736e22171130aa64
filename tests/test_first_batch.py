"""The first batch of an epoch does not wait on work that grows with the number of shards
(issue 27: ≤ 1.5x the time at 16x the data; docs/performance.md "Scale curves")."""
import os
import shutil
import subprocess
import sys

import pyarrow as pa

from raysup.data.ingest import PreparedData
from raysup.data.schema import MANIFEST, OUTPUT_BLOCK_BYTES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_building_a_dataset_opens_no_shard(ray_session, small_prepared, tmp_path):
    """A set's dataset is built from its manifest alone: with every shard file gone it still
    builds, and its read tasks deal every shard once, in the manifest's order, or in a seeded
    order per epoch, the first task one shard alone. (Ray's Parquet reader listed every file and read ~1% of them in Ray tasks
    on each build: 3 builds per XDC round, each ~1-3 s more at 391 files than at 25.)"""
    shutil.copy(f"{small_prepared[0]}/{MANIFEST}", tmp_path / MANIFEST)  # no data/: no shard to open
    data = PreparedData(str(tmp_path))
    shards = [f"{tmp_path}/{s}" for s in data.shards()]
    for shuffle in (None, 0):
        ds = data.dataset(["video_id", "clip_index", "audio"], crop=None, shuffle=shuffle, paths=True)
        source = ds._logical_plan.dag.datasource  # the Read operator's
        tasks = [task.metadata.input_files for task in source.get_read_tasks(4)]
        files = [f for task in tasks for f in task]
        assert sorted(files) == sorted(shards) and (files == shards) == (shuffle is None)
        assert len(tasks[0]) == 1 < len(shards)  # the first block comes after one shard's read
        # a worker holds one output block, not its task's share of the set (XDC's join runs in the read tasks)
        assert ds.map_batches(lambda b: b).context.target_max_block_size == OUTPUT_BLOCK_BYTES < 128 * 1024**2


def test_read_tasks_name_each_clip_s_shard(ray_session, small_prepared):
    """``paths=True``: every clip with the file it was read from (XDC joins labels by shard)."""
    data = PreparedData(small_prepared[0])
    table = pa.concat_tables(data.dataset(["video_id"], crop=None, shuffle=0, paths=True).iter_batches(batch_size=None, batch_format="pyarrow"))
    index = dict(zip(data.index["video_id"].to_pylist(), data.index["shard"].to_pylist()))
    assert table.num_rows == data.manifest["counts"]["clips"]
    assert all(path == f"{small_prepared[0]}/{index[v]}" for v, path in zip(table["video_id"].to_pylist(), table["path"].to_pylist()))


def test_per_video_sums_run_in_workers_without_torch():
    """The function a probe's feature means run in Ray tasks imports no torch: a worker that
    imported raysup.features for it peaked at ~760 MB, ~500 MB of it torch (scale.py video_average)."""
    from raysup.features import sum_per_video, video_sums

    assert sum_per_video.__module__ == "raysup.video_sums" and video_sums.__module__ == "raysup.features"
    code = "import sys, raysup.video_sums; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})


def _arrow_held(parts) -> int:
    """The most bytes Arrow held (its default pool) when each of ``parts`` came, above what it held before."""
    before = pa.total_allocated_bytes()
    return max(pa.total_allocated_bytes() - before for _ in parts)


def test_feature_means_of_a_written_folder_hold_a_row_group_not_a_file(ray_session, tmp_path):
    """A probe's per-video means of features written to Parquet (one file of many row groups, as
    write_features writes them: files of at least 128 MB, a row group per block) equal the
    exact means, and a task's Arrow memory stays flat when the file grows 16x: it holds a row
    group and a batch (Ray's read_parquet made the whole file one task's block, as reading the
    file whole does here, scale.py video_average: one worker 342 -> 894 MB; and pyarrow's reader
    over a range of row groups buffered the whole range)."""
    import numpy as np
    import pyarrow.parquet as pq

    from raysup.cluster_features import fragments, read_video_means, sum_fragments
    from raysup.data.schema import vectors

    peaks, whole, folders = [], [], []
    for rows in (4096, 65536):
        rng = np.random.default_rng(rows)
        vid = np.array([f"v{i:05d}" for i in rng.integers(0, rows // 8, rows)])
        x = rng.normal(size=(rows, 16)).astype(np.float32)
        folder = tmp_path / str(rows)
        folder.mkdir()
        pq.write_table(pa.table({"video_id": vid, "clip_index": pa.array(np.arange(rows), pa.int32()), "video": vectors(x), "audio": vectors(-x)}),
                       folder / "part-0.parquet", row_group_size=1024)
        items, _ = fragments(str(folder), [])
        peaks.append(_arrow_held(sum_fragments(pa.Table.from_pylist(items), uri=str(folder), columns=["video_id", "video", "audio"], batch_size=1024)))
        whole.append(_arrow_held(pq.read_table(folder / "part-0.parquet") for _ in range(1)))  # noqa: B023
        folders.append((folder, vid, x))
    folder, vid, x = folders[0]
    ids, means = read_video_means(str(folder), batch_size=1000, item_bytes=1 << 18)  # a few tasks over one file
    expected = np.stack([x[vid == v].mean(0) for v in ids])
    assert list(ids) == sorted(set(vid)) and np.allclose(means["video"], expected, atol=1e-5) and np.allclose(means["audio"], -expected, atol=1e-5)
    print(f"Arrow peak of a task: {peaks} B; of the file read whole: {whole} B")
    assert peaks[1] < 1.5 * peaks[0] and whole[1] > 8 * whole[0] and peaks[1] < whole[1] / 8
