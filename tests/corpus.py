"""Small real documents for end-to-end tests and benchmarks: one file per
supported type, each about its own topic, with a query written for it."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path


def pdf_bytes(pages: list[str], title: str = "") -> bytes:
    """A minimal valid PDF: one Helvetica text line per page, real xref offsets."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, filled in below
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % content
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    info = b""
    if title:
        objects.append(b"<< /Title (%s) >>" % title.encode())
        info = b" /Info %d 0 R" % len(objects)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, info, xref)
    )
    return out.getvalue()


def docx_bytes(title: str, paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@dataclass(frozen=True)
class Probe:
    path: str  # relative to the source directory
    query: str  # written for that file, sharing few of its words


# One topic per file; the queries paraphrase rather than quote.
FIRST_SOURCE: dict[str, tuple[bytes, str]] = {
    "volcanoes.txt": (
        b"Volcanoes form where molten rock from the mantle rises through cracks in the "
        b"crust. An eruption throws out lava, ash and gases, and the lava cools into new "
        b"basalt land around the vent.",
        "how do volcanic eruptions happen",
    ),
    "notes/sourdough.md": (
        b"# Baking sourdough bread\n\nA starter of flour and water ferments with wild "
        b"yeast and lactic bacteria. Fold the dough, let it proof overnight, then bake "
        b"the loaf in a very hot oven for a crisp crust.",
        "fermenting dough with wild yeast to bake a loaf",
    ),
    "chess.html": (
        b"<html><head><title>Chess openings</title></head><body><h1>Chess openings</h1>"
        b"<p>The Sicilian Defence answers the king's pawn with the c-pawn. White often "
        b"castles early and fights for the centre squares with knights and bishops.</p>"
        b"</body></html>",
        "good first moves on the chessboard",
    ),
    "tides.pdf": (
        pdf_bytes(
            [
                "Ocean tides rise and fall because the Moon and the Sun pull on the seas.",
                "Spring tides come at new and full moon, neap tides at the quarters.",
            ],
            "Tides",
        ),
        "why does the sea level go up and down every day",
    ),
    "bees.docx": (
        docx_bytes(
            "Honey bees",
            [
                "Honey bees tell their sisters where flowers are with the waggle dance.",
                "The angle of the dance points to the nectar and its length gives distance.",
            ],
        ),
        "how do bees show each other where to find nectar",
    ),
}
CORRUPT_PDF = "broken.pdf"

SECOND_SOURCE: dict[str, tuple[bytes, str]] = {
    "espresso.txt": (
        b"Espresso is brewed by forcing hot water at high pressure through finely ground "
        b"coffee beans, which gives a small strong cup topped with crema.",
        "making a strong coffee shot with a machine",
    ),
    "glaciers.md": (
        b"# Glaciers\n\nGlaciers are rivers of ice that creep downhill, carving U-shaped "
        b"valleys and leaving moraines of rock where they melt.",
        "how moving ice shapes mountain valleys",
    ),
}


def write_source(folder: Path, files: dict[str, tuple[bytes, str]]) -> list[Probe]:
    for relative, (data, _query) in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return [Probe(relative, query) for relative, (_data, query) in files.items()]


def write_corrupt_pdf(folder: Path) -> None:
    (folder / CORRUPT_PDF).write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage")


WORDS = (
    "vector search index collection document chunk embedding model query semantic "
    "similarity retrieval ranking token batch queue operation reindex switch cleanup "
    "quota audit source append remove validation staging alias payload metadata score "
    "cluster replica shard latency throughput backpressure deadline priority health"
).split()


def write_text_corpus(folder: Path, documents: int, words: int, seed: int = 7) -> None:
    """``documents`` text files of ``words`` random words each, for load and benchmarks."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(documents):
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        (folder / f"doc-{number:05d}.txt").write_text(f"document {number}. {text}\n")
