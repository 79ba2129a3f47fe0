"""Write the colour emoji of the Noto Color Emoji font as two .npz files for `folder:PATH.npz`: a training
half and a held-out half, a small set of colour images that needs no network beyond the Debian archive.

    python benchmarks/emoji_set.py SOURCE [--size 64] [--train 711] [--out-dir .]

SOURCE is Debian's fonts-noto-color-emoji package (`apt-get download fonts-noto-color-emoji` fetches the
.deb, no install needed) or the NotoColorEmoji.ttf it holds. Every emoji that is a single code point (1,411
in the package's version 2.042: faces, people, animals, food, objects, symbols, letter tiles) is drawn from
the font's 109-pixel colour bitmaps onto white, centred by its bounding box on a 136-pixel square and
resized once (Lanczos) to --size. They are split by a fixed seed into emoji-train.npz (--train of them) and
emoji-heldout.npz (the rest), uint8 [N, size, size, 3]. Used for the colour small-data measurement in the
README (Data).
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_MEMBER = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
STRIKE = 109  # the font's one bitmap size; FreeType refuses any other for a colour bitmap font
CANVAS = 136  # the strike's advance width, wider than any of its glyphs
SPLIT_SEED = 0
NOT_A_CHARACTER = "\U0010FFFF"  # a noncharacter: no font draws it
# Blocks that hold emoji; the code points the font lacks are skipped.
EMOJI_BLOCKS = [(0x1F000, 0x1FAFF), (0x2190, 0x21FF), (0x2300, 0x23FF), (0x25A0, 0x27BF), (0x2900, 0x297F),
                (0x2B00, 0x2BFF), (0x3030, 0x303D), (0x3297, 0x3299), (0x00A9, 0x00AE), (0x203C, 0x2049),
                (0x2122, 0x2139)]


def deb_member(deb: bytes, member: str) -> bytes:
    """One file from a Debian package: an `ar` archive whose data.tar.* holds the installed tree."""
    offset = 8  # past the "!<arch>\n" magic
    while offset + 60 <= len(deb):
        name, size = deb[offset:offset + 16].decode().strip().rstrip("/"), int(deb[offset + 48:offset + 58])
        if name.startswith("data.tar"):
            try:  # tarfile reads gzip, bzip2 and xz; zstd (Ubuntu's packages) it does not
                with tarfile.open(fileobj=io.BytesIO(deb[offset + 60:offset + 60 + size])) as tar:
                    for info in tar.getmembers():
                        if info.name.lstrip("./") == member:
                            return tar.extractfile(info).read()
            except tarfile.TarError:
                raise SystemExit(f"cannot read the package's {name}; unpack it with `dpkg-deb -x` and give the "
                                 ".ttf") from None
            raise SystemExit(f"the package holds no {member}; give fonts-noto-color-emoji's .deb")
        offset += 60 + size + size % 2
    raise SystemExit("the package has no data.tar member")


def render_all(font_bytes: bytes, size: int) -> np.ndarray:
    """Every single-code-point emoji the font draws, as uint8 [N, size, size, 3] on white."""
    font = ImageFont.truetype(io.BytesIO(font_bytes), STRIKE, layout_engine=ImageFont.Layout.BASIC)

    def draw(character: str) -> Image.Image:
        glyph = Image.new("RGBA", (2 * CANVAS, 2 * CANVAS), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((0, 0), character, font=font, fill="black", embedded_color=True)
        return glyph

    missing = draw(NOT_A_CHARACTER).tobytes()  # what the font draws for a code point it lacks: nothing, or a box
    images = []
    for first, last in EMOJI_BLOCKS:
        for code_point in range(first, last + 1):
            glyph = draw(chr(code_point))
            box = glyph.getbbox()
            if box is None or glyph.tobytes() == missing:
                continue
            glyph = glyph.crop(box)
            side = max(CANVAS, glyph.width, glyph.height)  # a glyph wider than the strike is kept whole
            square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
            square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
            images.append(np.asarray(square.convert("RGB").resize((size, size), Image.LANCZOS)))
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="fonts-noto-color-emoji's .deb, or NotoColorEmoji.ttf")
    parser.add_argument("--size", type=int, default=64, help="side of the written images in pixels")
    parser.add_argument("--train", type=int, default=711, help="emoji to train on; the rest are held out")
    parser.add_argument("--out-dir", type=Path, default=Path("."))
    args = parser.parse_args()
    if not args.source.is_file():
        sys.exit(f"{args.source} does not exist; `apt-get download fonts-noto-color-emoji` fetches the .deb")
    if not 8 <= args.size <= CANVAS:
        sys.exit(f"--size must be between 8 and {CANVAS}")
    raw = args.source.read_bytes()
    font_bytes = deb_member(raw, FONT_MEMBER) if raw.startswith(b"!<arch>") else raw
    try:
        images = render_all(font_bytes, args.size)
    except OSError as err:
        sys.exit(f"{args.source}: not a font FreeType reads ({err})")
    if len(images) < 2:
        sys.exit(f"{args.source}: the font draws {len(images)} of the emoji blocks' code points; give Noto Color Emoji")
    if not 0 < args.train < len(images):
        sys.exit(f"--train must be between 1 and {len(images) - 1} (the font draws {len(images)} emoji)")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(args.out_dir / "emoji-train.npz", images[np.sort(order[:args.train])])
    np.savez(args.out_dir / "emoji-heldout.npz", images[np.sort(order[args.train:])])
    print(f"drew {len(images)} emoji at {args.size}x{args.size}; "
          f"wrote {args.train} to {args.out_dir / 'emoji-train.npz'} and {len(images) - args.train} to "
          f"{args.out_dir / 'emoji-heldout.npz'}")


if __name__ == "__main__":
    main()
