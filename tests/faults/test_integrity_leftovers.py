"""What killed commands leave behind is cleaned up: cache temp files, hidden checkout
folders in the workspace, unfinished S3 multipart uploads."""

from __future__ import annotations

import os
import pathlib
import shutil

from remote_support import clone, files_of, make_project
from support import PivotCLI, kill_when, start_pivot_group, write_files


def s3_remote(cli: PivotCLI, seaweedfs, bucket: str) -> None:
    cli("remote", "add", "--default", "origin", f"s3://{bucket}/cache")
    for key, value in seaweedfs.options().items():
        secret = ["--local"] if "key" in key else []
        cli("remote", "modify", *secret, "origin", key, value)


def blob_temps(root: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in (root / ".pivot" / "tmp").glob("blob.*")]


def growing_temp(root: pathlib.Path):
    def ready() -> bool:
        for path in blob_temps(root):
            try:
                if path.is_file() and path.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                pass
        return False

    return ready


def test_killed_pull_leaves_a_temp_blob_that_gc_and_the_next_pull_remove(tmp_path, seaweedfs):
    big = os.urandom(64 << 20)
    src = make_project(tmp_path / "src", {"big.bin": big})
    s3_remote(PivotCLI(src.root), seaweedfs, seaweedfs.new_bucket())
    PivotCLI(src.root)("push", "--all")
    dst = clone(src, tmp_path / "dst")
    cli = PivotCLI(dst.root)
    for config in ("config.yaml", "config.local.yaml"):
        (dst.root / ".pivot" / config).write_bytes((src.root / ".pivot" / config).read_bytes())

    assert kill_when(
        start_pivot_group(dst.root, "pull", "--all", "-j", "1"), growing_temp(dst.root)
    )
    assert blob_temps(dst.root), "the killed pull left its temp blob"
    assert "Would remove" in cli("gc", "--dry-run").stdout and blob_temps(dst.root)
    gc = cli("gc")
    assert "leftover temp" in gc.stdout and blob_temps(dst.root) == []

    assert kill_when(
        start_pivot_group(dst.root, "pull", "--all", "-j", "1"), growing_temp(dst.root)
    )
    cli("pull", "--all")  # takes the command lock: the stale temp files go first
    assert blob_temps(dst.root) == []
    assert (dst.root / "big.bin").read_bytes() == big


def test_killed_pull_leaves_no_hidden_folder_after_the_next_pull(tmp_path):
    files = {f"data/d{i % 20}/f{i}.txt": f"{i}\n".encode() * 50 for i in range(1500)}
    src = make_project(tmp_path / "src", files)
    PivotCLI(src.root)("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    PivotCLI(src.root)("push", "--all")
    dst = clone(src, tmp_path / "dst")
    cli = PivotCLI(dst.root)
    cli("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    cli("fetch", "--all")

    def hidden() -> list[pathlib.Path]:
        return [p for p in dst.root.iterdir() if ".pivot-tmp-" in p.name]

    for _ in range(5):  # a pull that finished before the kill is tried again
        if kill_when(start_pivot_group(dst.root, "pull", "--all"), lambda: bool(hidden())):
            break
        shutil.rmtree(dst.root / "data")
    assert hidden(), "the killed pull left its hidden folder (it shows in `git status`)"
    cli("pull", "--all")
    assert hidden() == [] and files_of(dst.root) == files


def test_killed_run_leaves_temp_files_the_next_run_removes(project, pivot):
    write_files(
        project,
        {
            "seed.txt": "1\n",
            "pipeline.py": """
                import pathlib
                import random
                from typing import Annotated

                import pivot

                pipeline = pivot.Pipeline("p")


                def make(
                    seed: Annotated[str, pivot.Dep("seed.txt", pivot.loaders.Text())],
                ) -> Annotated[pathlib.Path, pivot.Out("big.bin", pivot.loaders.PathOnly())]:
                    out = pathlib.Path("big.bin")
                    out.write_bytes(random.Random(seed).randbytes(64 << 20))
                    return out


                pipeline.register(make)
            """,
        },
    )
    for attempt in range(5):  # a run that finished before the kill is tried again
        if kill_when(start_pivot_group(project, "run"), growing_temp(project)):
            break
        (project / "seed.txt").write_text(f"{attempt + 2}\n")
    assert blob_temps(project), "the killed run left the temp copy of its output"
    pivot("run")
    assert blob_temps(project) == []
    assert (project / "big.bin").stat().st_size == 64 << 20


def test_remote_clean_aborts_stale_multipart_uploads(project, pivot, seaweedfs):
    """A push killed mid-upload leaves a multipart upload that S3 keeps (and bills)."""
    bucket = seaweedfs.new_bucket()
    s3_remote(pivot, seaweedfs, bucket)
    client = seaweedfs.client()
    key = "cache/packs/ab/" + "ab" * 32
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * (5 << 20))
    other = client.create_multipart_upload(Bucket=bucket, Key="elsewhere/file")["UploadId"]

    def uploads() -> set[str]:
        return {
            u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ())
        }

    assert "Aborted 0" in pivot("remote", "clean").stdout  # younger than 24 h: maybe running
    assert uploads() == {upload, other}
    assert "Aborted 1" in pivot("remote", "clean", "origin", "--older-than", "0").stdout
    assert uploads() == {other}  # outside the remote's prefix: not Pivot's
