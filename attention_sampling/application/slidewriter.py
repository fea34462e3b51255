"""Writing pyramidal tiled TIFF slides tile by tile, never a level whole in memory (tests, the slide
benchmark and the README's example use them; tifffile writes, slides.py reads).

A slide is described by `render(d, top, left, h, w) -> (h, w, 3) uint8`: the pixels [top, top + h) x
[left, left + w) of the level of downsample d, whose size is (H // d) x (W // d). Level 0 is the main
image; the others are its SubIFDs, as pathology scanners and `bfconvert`/`vips` write them.
"""
import numpy as np

BACKGROUND = np.array([242, 238, 244], dtype=np.float32)  # glass
STROMA = np.array([226, 160, 196], dtype=np.float32)      # eosin pink
NUCLEUS = np.array([96, 62, 146], dtype=np.float32)       # haematoxylin purple


def write_pyramid(path, height, width, render, downsamples=(1, 2, 4), tile=256, compression="zlib", level=1):
    """Write a (height, width, 3) RGB slide with one level per downsample, each in tile x tile tiles,
    compressed (zlib by default: tifffile needs no codec package for it)."""
    import tifffile

    def tiles(d):
        h, w = height // d, width // d
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                block = render(d, top, left, min(tile, h - top), min(tile, w - left))
                if block.shape[:2] != (tile, tile):  # edge tiles are stored whole, padded
                    padded = np.zeros((tile, tile, 3), dtype=np.uint8)
                    padded[:block.shape[0], :block.shape[1]] = block
                    block = padded
                yield block

    arguments = dict(tile=(tile, tile), photometric="rgb", compression=compression, dtype=np.uint8)
    if compression == "zlib":
        arguments["compressionargs"] = {"level": level}
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for index, d in enumerate(downsamples):
            extra = dict(subifds=len(downsamples) - 1) if index == 0 else dict(subfiletype=1)
            tiff.write(tiles(d), shape=(height // d, width // d, 3), **arguments, **extra)


def pooled_levels(image, downsamples):
    """{d: the (H, W, 3) uint8 image average-pooled by d, rounded} for an in-memory image: the pyramid a
    careful writer stores (leftover rows and columns dropped, as the attention view drops them)."""
    levels = {}
    for d in downsamples:
        h, w = image.shape[0] // d, image.shape[1] // d
        pooled = image[:h * d, :w * d].reshape(h, d, w, d, -1).astype(np.float64).mean(axis=(1, 3))
        levels[d] = np.rint(pooled).astype(np.uint8)
    return levels


def write_image_pyramid(path, image, downsamples=(1, 2, 4), tile=32, compression="zlib"):
    """A small in-memory (H, W, 3) uint8 image as a pyramidal tiled TIFF whose levels are its average pools."""
    levels = pooled_levels(image, downsamples)
    write_pyramid(path, image.shape[0], image.shape[1],
                  lambda d, top, left, h, w: levels[d][top:top + h, left:left + w], downsamples, tile, compression)


class Tissue:
    """A synthetic H&E-like slide: pink tissue blobs on glass, purple nuclei in them, and class-coding
    `spots` (small patches of nuclei in stripes) that only level 0 resolves. Rendered at any level from
    the same smooth field, so every level looks like a pool of level 0 (not exactly one).

    spots: 'horizontal' or 'vertical' stripes of nuclei, or None."""

    def __init__(self, height, width, seed=0, blobs=12, spots=None, n_spots=6, spot_size=48):
        rng = np.random.default_rng(seed)
        self.height, self.width = height, width
        self.centres = rng.uniform(0.15, 0.85, size=(blobs, 2)) * (height, width)
        self.radii = rng.uniform(0.06, 0.16, size=blobs) * min(height, width)
        self.spots = spots
        self.spot_size = spot_size
        self.spot_corners = (rng.uniform(0.2, 0.8, size=(n_spots, 2)) * (height, width)).astype(np.int64)
        # Nuclei: a fixed 256 x 256 pattern of dots, tiled over level 0 (its mean colours the coarser levels).
        grid = np.mgrid[0:256, 0:256]
        jitter = np.random.default_rng(seed + 1).integers(0, 4, size=(32, 32, 2))
        offsets = np.repeat(np.repeat(jitter, 8, axis=0), 8, axis=1)
        self.nuclei = (((grid[0] - offsets[..., 0]) % 8 < 3) & ((grid[1] - offsets[..., 1]) % 8 < 3)).astype(np.float32)

    def tissue(self, rows, columns):
        """Level-0 coordinates (h,), (w,) -> (h, w) tissue density in [0, 1]: a sum of separable Gaussians."""
        density = np.zeros((len(rows), len(columns)), dtype=np.float32)
        for (y, x), r in zip(self.centres, self.radii):
            along_rows = np.exp(-((rows - y) / r) ** 2).astype(np.float32)
            along_columns = np.exp(-((columns - x) / r) ** 2).astype(np.float32)
            density += along_rows[:, None] * along_columns[None, :]
        return np.clip(density * 1.5, 0, 1)

    def __call__(self, d, top, left, h, w):
        rows = (top + np.arange(h) + 0.5) * d
        columns = (left + np.arange(w) + 0.5) * d
        tissue = self.tissue(rows, columns)[..., None]
        if d == 1:
            nuclei = self.nuclei[top % 256:top % 256 + h, left % 256:left % 256 + w]
            if nuclei.shape != (h, w):
                nuclei = np.tile(self.nuclei, (h // 256 + 2, w // 256 + 2))[top % 256:top % 256 + h,
                                                                            left % 256:left % 256 + w]
        else:
            nuclei = np.full((h, w), self.nuclei.mean(), dtype=np.float32)
        nuclei = nuclei[..., None] * tissue
        for corner in self.spot_corners if self.spots else ():
            self._paint_spot(nuclei, corner, d, top, left, h, w)
        colour = BACKGROUND + tissue * (STROMA - BACKGROUND)
        colour = colour + nuclei * (NUCLEUS - colour)
        return np.clip(np.rint(colour), 0, 255).astype(np.uint8)

    def _paint_spot(self, nuclei, corner, d, top, left, h, w):
        """A spot_size square of stripes (period 2 at level 0, so every coarser level sees it flat)."""
        y0, x0 = corner // d - (top, left)
        size = max(1, self.spot_size // d)
        r0, r1 = max(0, y0), min(h, y0 + size)
        c0, c1 = max(0, x0), min(w, x0 + size)
        if r0 >= r1 or c0 >= c1:
            return
        if d == 1:
            rows, columns = np.mgrid[r0 - y0:r1 - y0, c0 - x0:c1 - x0]
            stripes = (rows % 2) if self.spots == "horizontal" else (columns % 2)
            nuclei[r0:r1, c0:c1, 0] = stripes
        else:
            nuclei[r0:r1, c0:c1, 0] = 0.5


def write_dataset(root, per_class=8, side=4096, downsamples=(1, 2, 4, 8, 16), spot_size=128, n_spots=40, seed=0):
    """ROOT/<horizontal|vertical>/<i>.tif: a class-folder data set of generated slides whose class is the
    direction of the stripes in a few small spots, resolved only at level 0 -> the paths written."""
    import os

    paths = []
    for offset, label in enumerate(("horizontal", "vertical")):
        os.makedirs(os.path.join(root, label), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(root, label, f"{i:03d}.tif")
            tissue = Tissue(side, side, seed=seed + 1000 * offset + i, spots=label, n_spots=n_spots, spot_size=spot_size)
            write_pyramid(path, side, side, tissue, downsamples)
            paths.append(path)
    return paths


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Write a class-folder data set of generated pyramidal TIFF slides.")
    parser.add_argument("root", help="folder to write ROOT/<horizontal|vertical>/<i>.tif into")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--side", type=int, default=4096, help="slide side in pixels (default 4096)")
    parser.add_argument("--spot-size", type=int, default=128, help="side of a class-coding spot (default 128)")
    parser.add_argument("--spots", type=int, default=40, help="spots per slide (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_dataset(args.root, args.per_class, args.side, spot_size=args.spot_size, n_spots=args.spots,
                          seed=args.seed)
    print(f"wrote {len(paths)} slides of {args.side} x {args.side} into {args.root}")


if __name__ == "__main__":
    main()
