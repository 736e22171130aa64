"""The one random resized crop (issue 19 item 6): crop boxes drawn as torchvision draws them,
the box resized exactly (a coordinate ramp comes out as the affine map of its box), one box and
flip for every channel and frame of a sample, and flow fields rescaled and mirrored with the
image."""
from __future__ import annotations

import math

import torch
from torchvision.transforms import RandomResizedCrop

from raysup.data.transforms import KINETICS_MEAN, KINETICS_STD, crop_boxes, random_resized_crop_flip, video_input

RATIO = (3 / 4, 4 / 3)


def test_crop_boxes_follow_torchvision():
    torch.manual_seed(0)
    b, h, w, scale = 4000, 32, 48, (0.2, 0.6)
    ours = crop_boxes(b, h, w, scale, RATIO)  # [B,4] x0,y0,x1,y1
    bw, bh = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
    assert torch.equal(ours, ours.round()) and (ours[:, :2] >= 0).all() and (ours[:, 2] <= w).all() and (ours[:, 3] <= h).all()
    theirs = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, h, w), list(scale), list(RATIO)) for _ in range(b)]).float()  # top,left,h,w
    for mine, ref in [(bw * bh / (h * w), theirs[:, 2] * theirs[:, 3] / (h * w)),  # area fraction
                      ((bw / bh).log(), (theirs[:, 3] / theirs[:, 2]).log()),  # log aspect ratio
                      (ours[:, 0] / (w - bw + 1), theirs[:, 1] / (w - theirs[:, 3] + 1))]:  # position in the free range
        assert abs(mine.mean() - ref.mean()) < 0.02 and abs(mine.std() - ref.std()) < 0.02
    # a 10×100 strip: no box of 90-100% of the area fits the aspect range; both fall back to the same centre crop
    (top, left, fh, fw) = RandomResizedCrop.get_params(torch.empty(3, 10, 100), [0.9, 1.0], list(RATIO))
    assert crop_boxes(5, 10, 100, (0.9, 1.0), RATIO).tolist() == [[left, top, left + fw, top + fh]] * 5


def test_crop_resizes_its_box_and_flips():
    """Input channels hold each pixel's x and y; bilinear resizing maps a linear ramp to a linear
    ramp, so every output row is x0 − ½ + (j + ½)·w/S_w for a box x0..x0+w (reversed if flipped).
    The outermost output pixels are left out: where a box touches the image border, their samples
    clamp to the edge pixel (as in any bilinear resize)."""
    torch.manual_seed(0)
    b, h, w, size = 256, 32, 40, (24, 20)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    out = random_resized_crop_flip(torch.stack([xs, ys])[None].expand(b, 2, h, w), (0.3, 1.0), size=size)  # [B,2,24,20]
    assert out.shape == (b, 2, *size)
    x, y = out[:, 0], out[:, 1]
    flipped = x[:, 0, 1] > x[:, 0, 2]  # [B]
    assert 0.4 * b < flipped.sum() < 0.6 * b
    x = torch.where(flipped[:, None, None], x.flip(-1), x)
    step_x, step_y = x[:, 0, 2] - x[:, 0, 1], y[:, 2, 0] - y[:, 1, 0]  # [B] box side / output side
    x0 = x[:, 0, 1] + 0.5 - 1.5 * step_x  # [B] the box's left edge
    y0 = y[:, 1, 0] + 0.5 - 1.5 * step_y
    j, i = torch.arange(size[1]), torch.arange(size[0])
    ramp_x = (x0[:, None] - 0.5 + (j + 0.5) * step_x[:, None])[:, None].expand_as(x)  # [B,S_h,S_w]
    ramp_y = (y0[:, None] - 0.5 + (i + 0.5) * step_y[:, None])[:, :, None].expand_as(y)
    torch.testing.assert_close(x[:, 1:-1, 1:-1], ramp_x[:, 1:-1, 1:-1], atol=0.02, rtol=0)
    torch.testing.assert_close(y[:, 1:-1, 1:-1], ramp_y[:, 1:-1, 1:-1], atol=0.02, rtol=0)
    bw, bh = step_x * size[1], step_y * size[0]  # [B] box sides in pixels
    for v in (x0, y0, bw, bh):  # whole pixels
        torch.testing.assert_close(v, v.round(), atol=0.05, rtol=0)
    x0, y0, bw, bh = x0.round(), y0.round(), bw.round(), bh.round()
    assert (x0 >= 0).all() and (x0 + bw <= w).all() and (y0 >= 0).all() and (y0 + bh <= h).all()
    area = bw * bh / (h * w)
    assert (area > 0.3 - 0.05).all()  # within scale, up to the rounding of sides
    assert ((bw / bh).log().abs() < math.log(4 / 3) + 0.1).all()


def test_frames_and_channels_of_a_sample_share_box_and_flip():
    torch.manual_seed(0)
    b, t = 32, 4
    image = torch.rand(b, 1, 1, 32, 32)  # one random image per sample
    clips = image + torch.arange(3.0)[None, :, None, None, None] + 10 * torch.arange(t, dtype=torch.float32)[None, None, :, None, None]
    out = random_resized_crop_flip(clips)  # [B,3,T,32,32]: channel c, frame τ are the image + c + 10τ
    assert out.shape == clips.shape
    first = out[:, :1, :1]  # [B,1,1,H,W]
    torch.testing.assert_close(out - first, (clips - clips[:, :1, :1])[..., :1, :1].expand_as(out), atol=1e-4, rtol=0)
    assert not torch.allclose(out, clips)  # something was cropped


def test_flow_channels_scale_and_mirror_with_the_image():
    """Channels 0-1 hold each pixel's source coordinates, then two flow fields (1.5, −0.5) and
    (−1, 2) in source pixels; after the crop the flow in output pixels times d(source)/d(output)
    gives back the source flow, dx negated exactly when the sample was flipped."""
    torch.manual_seed(0)
    b = 64
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    flow = torch.tensor([1.5, -0.5, -1.0, 2.0])[None, :, None, None].expand(b, 4, 32, 32)
    both = torch.cat([torch.stack([xs, ys])[None].expand(b, 2, 32, 32), flow], 1)  # [B,6,32,32]
    out = random_resized_crop_flip(both, (0.2, 1.0), size=(24, 24), flow_channels=4)  # [B,6,24,24]
    dx = out[:, 0, 6:18, 7:19] - out[:, 0, 6:18, 5:17]  # 2 × d(source x)/d(output x), interior
    dy = out[:, 1, 7:19, 6:18] - out[:, 1, 5:17, 6:18]
    for field, (fx, fy) in enumerate([(1.5, -0.5), (-1.0, 2.0)]):
        torch.testing.assert_close(out[:, 2 + 2 * field, 6:18, 6:18] * dx / 2, torch.full((b, 12, 12), fx), rtol=0.01, atol=0.01)
        torch.testing.assert_close(out[:, 3 + 2 * field, 6:18, 6:18] * dy / 2, torch.full((b, 12, 12), fy), rtol=0.01, atol=0.01)
    flipped = dx.mean(dim=(1, 2)) < 0
    assert 10 < flipped.sum() < b - 10


def test_video_input_crops_in_training_only():
    frames = torch.randint(0, 256, (4, 8, 32, 32, 3), dtype=torch.uint8)
    x = frames.permute(0, 4, 1, 2, 3).float() / 255  # [B,3,T,H,W]
    expected = (x - x.mean((2, 3, 4), keepdim=True)) / x.std((2, 3, 4), keepdim=True)
    torch.testing.assert_close(video_input(frames, train=False), expected)
    torch.manual_seed(0)
    train = video_input(frames, train=True)
    assert train.shape == expected.shape and not torch.allclose(train, expected)


def test_video_input_fixed_normalisations():
    """``fixed``: GDT's (x − 0.45)/0.225; ``kinetics``: XDC's per-channel Kinetics mean and std."""
    mean, std = torch.tensor(KINETICS_MEAN), torch.tensor(KINETICS_STD)
    frames = torch.zeros(2, 4, 8, 8, 3, dtype=torch.uint8)
    out = video_input(frames, train=False, norm="kinetics")  # black: −mean/std per channel
    torch.testing.assert_close(out[:, :, 0, 0, 0], (-mean / std).expand(2, 3))
    torch.testing.assert_close(video_input(frames, train=False, norm="fixed"), torch.full(out.shape, -0.45 / 0.225))
    white = video_input(torch.full_like(frames, 255), train=False, norm="kinetics")
    torch.testing.assert_close(white[:, :, 0, 0, 0], ((1 - mean) / std).expand(2, 3))
