"""Reading media: corrupt, truncated and huge files give clear errors; videos decode the right frames."""
import numpy as np
import pytest
from PIL import Image

from core.media import (DiskImageStore, MediaError, MemoryImageStore, Video, image_sha, load_image,
                        overview_indices, write_video)
from tests.conftest import numbered_frames, photo_like


def test_corrupt_image(tmp_path):
    p = tmp_path / "corrupt.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with pytest.raises(MediaError, match="not a readable image"):
        load_image(p)


def test_truncated_image(tmp_path):
    full = tmp_path / "full.jpg"
    photo_like(400, 300).save(full, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:2000])
    with pytest.raises(MediaError, match="corrupt or truncated"):
        load_image(cut)


def test_not_an_image_and_missing_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(MediaError, match="not a readable image"):
        load_image(p)
    with pytest.raises(MediaError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_100_megapixel_image_is_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(p)  # 100 MP, a small file: a decompression bomb
    assert p.stat().st_size < 2_000_000
    with pytest.raises(MediaError, match=r"100\.0 megapixels\); the limit is 40"):
        load_image(p)
    assert load_image(p, max_pixels=200_000_000).size == (10_000, 10_000)  # allowed when asked for


def test_load_image_from_bytes_converts_to_rgb(tmp_path):
    import io
    buf = io.BytesIO()
    Image.new("RGBA", (50, 40), (1, 2, 3, 128)).save(buf, format="PNG")
    img = load_image(buf.getvalue())
    assert img.mode == "RGB" and img.size == (50, 40)


def test_overview_indices_are_uniform_and_cover_the_ends():
    assert overview_indices(160, 16)[0] == 0 and overview_indices(160, 16)[-1] == 159
    assert overview_indices(5, 16) == [0, 1, 2, 3, 4]


def test_video_frames_are_the_right_ones_at_full_resolution(tmp_path):
    frames = list(numbered_frames(32, 320, 240))
    path = write_video(frames, tmp_path / "v.mp4", fps=8, qp=10)
    video = Video.from_file(path)
    assert video.n_frames == 16 and video.n_source_frames == 32 and video.fps == 8.0
    got = video.frames([1, 16])
    for k, img in zip([1, 16], got):
        src = np.asarray(frames[video.source_indices[k - 1]]).astype(int)
        assert img.size == (320, 240)
        assert np.abs(np.asarray(img).astype(int) - src).mean() < 6  # same frame, up to compression


def test_corrupt_and_truncated_videos(tmp_path, video_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(MediaError, match="not a readable video"):
        Video.from_file(bad)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video_path.read_bytes()[: video_path.stat().st_size // 3])
    with pytest.raises(MediaError):
        Video.from_file(cut)
    with pytest.raises(MediaError, match="no such file"):
        Video.from_file(tmp_path / "missing.mp4")


def test_video_from_frame_files(tmp_path):
    paths = []
    for i, f in enumerate(numbered_frames(20, 64, 48)):
        paths.append(tmp_path / f"{i:03d}.png")
        f.save(paths[-1])
    video = Video.from_frame_files(paths, n=16)
    assert video.n_frames == 16 and video.frames([3])[0].size == (64, 48)


def test_image_stores_are_content_addressed(tmp_path):
    img = photo_like(120, 90)
    disk, mem = DiskImageStore(tmp_path / "images"), MemoryImageStore()
    sha = disk.put(img)
    assert sha == mem.put(img) == image_sha(img.copy())
    assert disk.put(img) == sha and len(list((tmp_path / "images").rglob("*.png"))) == 1
    assert disk.get(sha).tobytes() == img.tobytes()


def test_frame_reader_matches_a_sequential_decode(tmp_path):
    """Any set of frames, in any order, equals the same frames of a full decode (B-frames, short GOP)."""
    import av

    from core.frames import FrameReader

    rng = np.random.default_rng(4)
    frames = [np.full((48, 64, 3), (i * 9) % 256, np.uint8) for i in range(40)]
    path = tmp_path / "gop.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "8", "bf": "2", "qp": "4"}
        for i, arr in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        sequential = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    reader = FrameReader(str(path))
    assert len(reader) == 40 and reader.fps == 10.0
    for _ in range(5):
        wanted = [int(i) for i in rng.choice(40, size=6, replace=False)]
        for i, got in zip(wanted, reader.get(wanted)):
            assert np.array_equal(got, sequential[i]), i
    reader.close()
