"""Loss curves: braille characters for the terminal and an SVG file, drawn here; a PNG by matplotlib when installed.

All share the same axis arithmetic (`Axes`), so the terminal chart and the saved images show the same picture.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional, Sequence
from xml.sax.saxutils import escape

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style

Points = Sequence[tuple[int, float]]

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
TRAIN_STYLE = Style(color="bright_blue")
VAL_STYLE = Style(color="bright_yellow", bold=True)
AXIS_STYLE = Style(dim=True)
# Braille cell: 2 dots wide, 4 high; bit of the dot at (column, row).
BRAILLE_BASE = 0x2800
# The terminal chart's loss range ignores the first tenth of the steps (drawn clipped at the top):
# a from-scratch GPT-2 run starts near 10.8 and would squeeze the rest of its curve into a few rows.
EARLY_STEPS_ABOVE_THE_CHART = 0.1
BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


@dataclass(frozen=True)
class Axes:
    """The data ranges shown: steps on x, loss on y (padded so lines do not touch the frame)."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float

    @classmethod
    def around(cls, *series: Points, skip_early: float = 0.0) -> "Axes":
        """Axes that hold every point; with `skip_early`, the top of the y range ignores that first
        fraction of the steps, so the first steps' high loss does not flatten the rest of the curve."""
        xs = [step for points in series for step, _ in points]
        if not xs or not any(math.isfinite(loss) for points in series for _, loss in points):
            return cls(0.0, 1.0, 0.0, 1.0)
        x_min, x_max = float(min(xs)), float(max(xs))
        ys = [loss for points in series for _, loss in points if math.isfinite(loss)]
        later = [
            loss for points in series for step, loss in points
            if math.isfinite(loss) and step >= x_min + skip_early * (x_max - x_min)
        ]
        y_min, y_max = min(ys), max(later or ys)
        if x_max == x_min:
            x_max = x_min + 1.0
        padding = (y_max - y_min) * 0.05 or 0.5
        return cls(x_min, x_max, y_min - padding, y_max + padding)

    def scale(self, step: float, loss: float, width: float, height: float) -> tuple[float, float]:
        """Data -> (x right, y down) in a width x height box; a loss above the range sits on the top edge."""
        x = (step - self.x_min) / (self.x_max - self.x_min) * width
        y = (self.y_max - loss) / (self.y_max - self.y_min) * height
        return x, max(y, 0.0)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        return [low]
    raw_step = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw_step)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def format_tick(value: float) -> str:
    """A step tick: 800, 1000, 20k."""
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def format_loss_ticks(ticks: list[float]) -> list[str]:
    """Loss ticks with as many decimals as their spacing needs: 1.5, 2.0, 2.5 rather than 1.5, 2, 2.5."""
    spacing = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(spacing) + 1e-9))
    return [f"{tick:.{decimals}f}" for tick in ticks]


# ---------------------------------------------------------------- terminal


class BrailleCanvas:
    """A grid of braille cells, each lit dot belonging to one series (the last one drawn wins a cell)."""

    def __init__(self, columns: int, rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.bits = [[0] * columns for _ in range(rows)]
        self.owner: list[list[int]] = [[-1] * columns for _ in range(rows)]

    @property
    def pixel_width(self) -> int:
        return self.columns * 2

    @property
    def pixel_height(self) -> int:
        return self.rows * 4

    def dot(self, x: int, y: int, series: int) -> None:
        if 0 <= x < self.pixel_width and 0 <= y < self.pixel_height:
            row, column = y // 4, x // 2
            self.bits[row][column] |= BRAILLE_BITS[x % 2][y % 4]
            self.owner[row][column] = series

    def line(self, start: tuple[float, float], end: tuple[float, float], series: int) -> None:
        (x0, y0), (x1, y1) = start, end
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for index in range(steps + 1):
            fraction = index / steps
            self.dot(round(x0 + (x1 - x0) * fraction), round(y0 + (y1 - y0) * fraction), series)

    def plot(self, points: Points, axes: Axes, series: int, markers: bool = False) -> None:
        """A line through `points`; with `markers`, each point also gets a 2x2 dot square (val's few evals)."""
        width, height = self.pixel_width - 1, self.pixel_height - 1
        scaled = [axes.scale(step, loss, width, height) for step, loss in points if math.isfinite(loss)]
        if len(scaled) == 1:
            self.dot(round(scaled[0][0]), round(scaled[0][1]), series)
        for start, end in zip(scaled, scaled[1:]):
            self.line(start, end, series)
        if markers:
            for x, y in scaled:
                for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1), (-1, 0), (0, -1)):
                    self.dot(round(x) + dx, round(y) + dy, series)

    def cell(self, row: int, column: int) -> tuple[str, int]:
        """The braille character of one cell and the series that owns it (-1 when empty)."""
        bits = self.bits[row][column]
        return (chr(BRAILLE_BASE + bits) if bits else " "), self.owner[row][column]


class LossChart:
    """A rich renderable: train and val loss over steps, as wide as it is given.

    The drawing is kept per (width, height): the live view redraws the same chart several
    times a second while its points only change at each logged step.
    """

    Y_LABEL_WIDTH = 7

    def __init__(self, train: Points, val: Points, height: int = 10) -> None:
        self.train, self.val, self.height = list(train), list(val), height
        self._drawn: dict[tuple[int, int], list[Segment]] = {}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width, self.Y_LABEL_WIDTH + 12)
        rows = options.height or self.height
        if (width, rows) not in self._drawn:
            self._drawn[(width, rows)] = self._draw(width, rows)
        yield from self._drawn[(width, rows)]

    def _draw(self, width: int, rows: int) -> list[Segment]:
        if not self.train and not self.val:
            return [Segment("waiting for the first logged step...", AXIS_STYLE), Segment.line()]
        plot_columns = width - self.Y_LABEL_WIDTH - 1
        plot_rows = max(rows - 2, 3)
        axes = Axes.around(self.train, self.val, skip_early=EARLY_STEPS_ABOVE_THE_CHART)
        canvas = BrailleCanvas(plot_columns, plot_rows)
        canvas.plot(self.train, axes, series=0)
        canvas.plot(self.val, axes, series=1, markers=True)
        labels = self._y_labels(axes, plot_rows)
        styles = {0: TRAIN_STYLE, 1: VAL_STYLE}
        segments: list[Segment] = []
        for row in range(plot_rows):
            axis = labels.get(row, "").rjust(self.Y_LABEL_WIDTH - 1) + (" ┤" if row in labels else " │")
            segments.append(Segment(axis, AXIS_STYLE))
            cells = [canvas.cell(row, column) for column in range(plot_columns)]
            run_start = 0
            for column in range(1, plot_columns + 1):  # one segment per run of cells in the same colour
                if column == plot_columns or cells[column][1] != cells[run_start][1]:
                    text = "".join(character for character, _ in cells[run_start:column])
                    segments.append(Segment(text, styles.get(cells[run_start][1])))
                    run_start = column
            segments.append(Segment.line())
        segments += [
            Segment(" " * self.Y_LABEL_WIDTH + "└" + "─" * plot_columns, AXIS_STYLE),
            Segment.line(),
            Segment(self._x_labels(axes, plot_columns), AXIS_STYLE),
            Segment.line(),
        ]
        return segments

    def _y_labels(self, axes: Axes, plot_rows: int) -> dict[int, str]:
        """Tick values by the row they fall on (top, middle, bottom at least)."""
        labels: dict[int, str] = {}
        ticks = nice_ticks(axes.y_min, axes.y_max, count=max(plot_rows // 2 + 1, 2))
        for tick, label in zip(ticks, format_loss_ticks(ticks)):
            _, y = axes.scale(axes.x_min, tick, 1, plot_rows * 4 - 1)
            labels.setdefault(round(y) // 4, label[: self.Y_LABEL_WIDTH - 1])
        return labels

    def _x_labels(self, axes: Axes, plot_columns: int) -> str:
        line = [" "] * (self.Y_LABEL_WIDTH + 1 + plot_columns)
        ticks = nice_ticks(axes.x_min, axes.x_max, count=max(plot_columns // 12, 1))
        last_end = 0
        for tick in ticks:
            x, _ = axes.scale(tick, axes.y_min, plot_columns - 1, 1)
            label = format_tick(tick)
            start = self.Y_LABEL_WIDTH + 1 + int(x) - len(label) // 2
            start = min(max(start, last_end + 1 if last_end else 0), len(line) - len(label))
            if start < last_end:
                continue
            line[start : start + len(label)] = list(label)
            last_end = start + len(label) + 1
        return "".join(line).rstrip()


# ---------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageLayout:
    """The plot box inside the SVG (margins in pixels) and data -> pixel positions."""

    axes: Axes
    width: int
    height: int
    margin_left: int
    margin_right: int
    margin_top: int
    margin_bottom: int

    @property
    def plot_width(self) -> int:
        return self.width - self.margin_left - self.margin_right

    @property
    def plot_height(self) -> int:
        return self.height - self.margin_top - self.margin_bottom

    @property
    def plot_left(self) -> float:
        return float(self.margin_left)

    @property
    def plot_bottom(self) -> float:
        return float(self.margin_top + self.plot_height)

    def position(self, step: float, loss: float) -> tuple[float, float]:
        x, y = self.axes.scale(step, loss, self.plot_width, self.plot_height)
        return self.margin_left + x, self.margin_top + y

    def series(self, points: Points) -> list[tuple[float, float]]:
        return [self.position(step, loss) for step, loss in points if math.isfinite(loss)]

    def y_ticks(self) -> list[tuple[str, float]]:
        """(label, pixel row) of the loss grid lines."""
        ticks = nice_ticks(self.axes.y_min, self.axes.y_max, 6)
        return [(label, self.position(self.axes.x_min, tick)[1]) for tick, label in zip(ticks, format_loss_ticks(ticks))]

    def x_ticks(self) -> list[tuple[str, float]]:
        """(label, pixel column) of the step ticks."""
        return [(format_tick(tick), self.position(tick, self.axes.y_min)[0]) for tick in nice_ticks(self.axes.x_min, self.axes.x_max, 8)]


SVG_WIDTH, SVG_HEIGHT = 720, 400
PNG_WIDTH, PNG_HEIGHT, PNG_DPI = 720, 400, 100
SVG_MARGINS = (64, 24, 44, 48)  # left, right, top, bottom


def loss_curve_svg(train: Points, val: Points, title: str = "loss") -> str:
    """A self-contained SVG: axes with ticks, train as a line, val as a line with dots, a legend."""
    layout = ImageLayout(Axes.around(train, val), SVG_WIDTH, SVG_HEIGHT, *SVG_MARGINS)
    left, bottom, right = layout.plot_left, layout.plot_bottom, layout.plot_left + layout.plot_width
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" '
        f'viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="white"/>',
        f'<text x="{SVG_WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for label, y in layout.y_ticks():
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for label, x in layout.x_ticks():
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="black"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{label}</text>')
    parts.append(
        f'<polyline points="{left},{layout.margin_top} {left},{bottom} {right},{bottom}" fill="none" stroke="black"/>'
    )
    parts.append(f'<text x="{(left + right) / 2}" y="{SVG_HEIGHT - 10}" text-anchor="middle">step</text>')
    for series_id, points, color in (("train", train, TRAIN_COLOR), ("val", val, VAL_COLOR)):
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in layout.series(points))
        parts.append(
            f'<polyline id="{series_id}" points="{coordinates}" fill="none" stroke="{color}" stroke-width="1.8"/>'
        )
    parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{VAL_COLOR}"/>' for x, y in layout.series(val))
    legend_x = right - 150
    for index, (label, color, count) in enumerate((("train", TRAIN_COLOR, len(train)), ("val", VAL_COLOR, len(val)))):
        y = layout.margin_top + 12 + index * 18
        parts.append(f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 24}" y2="{y}" stroke="{color}" stroke-width="3"/>')
        parts.append(f'<text x="{legend_x + 30}" y="{y + 4}">{label} ({count} points)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- PNG


def loss_curve_png(train: Points, val: Points, title: str = "loss") -> Optional[bytes]:
    """The same curves as a PNG, drawn by matplotlib when it is installed (`pip install 'hellogpt[plots]'`);
    None without it (the SVG is always written)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # not pyplot: no global figure state, no GUI backend
    except ImportError:
        return None
    axes = Axes.around(train, val)
    figure = Figure(figsize=(PNG_WIDTH / PNG_DPI, PNG_HEIGHT / PNG_DPI), dpi=PNG_DPI)
    FigureCanvasAgg(figure)
    plot = figure.add_subplot()
    for label, points, color, marker in (("train", train, TRAIN_COLOR, None), ("val", val, VAL_COLOR, "o")):
        finite = [(step, loss) for step, loss in points if math.isfinite(loss)]
        plot.plot(
            [step for step, _ in finite], [loss for _, loss in finite],
            color=color, marker=marker, markersize=4, linewidth=1.8, label=f"{label} ({len(points)} points)",
        )
    plot.set_xlim(axes.x_min, axes.x_max)
    plot.set_ylim(axes.y_min, axes.y_max)
    plot.set_xlabel("step")
    plot.set_ylabel("loss")
    plot.set_title(title)
    plot.grid(color="#e5e5e5")
    plot.legend(loc="upper right")
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", metadata={"Description": f"train_points={len(train)} val_points={len(val)}"})
    return image.getvalue()
