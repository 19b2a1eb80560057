"""Charts for the HTML report, drawn with matplotlib and returned as inline SVG text.

Every chart is drawn on a :class:`matplotlib.figure.Figure` created directly (no ``pyplot``), so
the report changes no global matplotlib state: the backend, the current figure and the rcParams
of other callers stay as they were. Settings apply only inside an ``rc_context``.

Text is written as SVG ``<text>`` (``svg.fonttype = "none"``), so the browser draws it with its
own fonts. Chinese labels need this because the fonts matplotlib finds on a server often lack
CJK glyphs. Matplotlib still measures labels with its own font to lay the figure out, so long
Chinese labels may sit slightly off centre. The functions take labels already translated and
arrays already reduced to a bounded size by the caller.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

__all__ = [
    "cohort_heatmap",
    "value_histogram",
    "lorenz_curves",
    "segment_shares",
    "alive_heatmap",
    "tracking_plot",
]

# Browsers pick fonts per character from this list: DejaVu Sans (what matplotlib measures with)
# for Latin text, then the usual Simplified Chinese system fonts on Linux, macOS and Windows.
_FONT_FAMILIES = [
    "DejaVu Sans",
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "PingFang SC",
    "Microsoft YaHei",
    "WenQuanYi Micro Hei",
    "Arial",
]
_BASE_RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": _FONT_FAMILIES,
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# By default the SVG writer adds Dublin Core metadata with a creation date. Without it, two
# renderings of the same data are byte-identical.
_NO_METADATA = {"Format": None, "Type": None, "Creator": None, "Date": None}

# Figure sizes in inches. At the report's maximum content width (about 1000 CSS pixels) a
# 10-inch-wide figure shows its 9-point text at roughly the size of the page text.
_WIDE = 10.0
_ROW_HEIGHT = 0.25
_MIN_HEIGHT = 2.6
_MAX_HEIGHT = 10.0

_ACTUAL_COLOR = "#1f4e79"
_PREDICTED_COLOR = "#d9822b"
_SERIES_COLORS = (_ACTUAL_COLOR, _PREDICTED_COLOR, "#7a9a01")
_HEATMAP_COLORS = "YlGnBu"
# Cells darker than this fraction of the colour scale get white annotation text.
_DARK_CELL = 0.6

# More tick labels than this overlap on a 10-inch axis at 9 points.
_MAX_TICK_LABELS = 36

_ID_ATTRIBUTE = re.compile(r'\bid="([^"]+)"')


def _plain(text: str) -> str:
    """Escape ``$`` so that matplotlib shows ``text`` literally instead of parsing math in it."""
    return text.replace("$", r"\$")


def _figure(height: float, *, width: float = _WIDE) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _height_for_rows(rows: int) -> float:
    return float(np.clip(rows * _ROW_HEIGHT + 1.2, _MIN_HEIGHT, _MAX_HEIGHT))


@contextmanager
def _chart_style(chart_id: str) -> Iterator[None]:
    """Apply the report's matplotlib settings while a chart is built and saved, and only then.

    Settings such as the font size and the spines are read when an artist is created, so the
    whole drawing, not only ``savefig``, runs inside the context.
    """
    with matplotlib.rc_context({**_BASE_RC, "svg.hashsalt": chart_id}), warnings.catch_warnings():
        # The local font may lack CJK glyphs. The browser draws the text, so the warning only
        # reports that the layout used a fallback width for those characters.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield


def _to_svg(figure: Figure, *, chart_id: str, title: str) -> str:
    """Serialise ``figure`` as an SVG element for inline use, its ids prefixed with ``chart_id``.

    Several SVGs inline in one page share one id namespace, and matplotlib numbers its ids
    (``figure_1``, ``patch_2``) from 1 in every figure. The prefix keeps each chart's internal
    references (clip paths, reused markers) pointing into its own SVG.
    """
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={**_NO_METADATA, "Title": title})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]

    names = set(_ID_ATTRIBUTE.findall(svg))

    def prefixed(match: re.Match) -> str:
        name = match.group(2)
        return f"{match.group(1)}{chart_id}-{name}" if name in names else match.group(0)

    return re.sub(r'(\bid="|url\(#|href="#)([^")]+)', prefixed, svg)


def _draw_heatmap(axes, values: np.ndarray, *, x_range: tuple[float, float], top_down: bool, vmax: float = 1.0):
    """Draw ``values`` (rows by columns, NaN = no data, blank) as cells one unit high.

    The cells are an image without interpolation, embedded once as a small PNG, so the SVG does not
    grow with the number of cells as it would with one vector path per cell.
    """
    n_rows = values.shape[0]
    left, right = x_range
    extent = (left, right, n_rows, 0) if top_down else (left, right, 0, n_rows)
    return axes.imshow(
        np.ma.masked_invalid(values),
        cmap=_HEATMAP_COLORS,
        vmin=0.0,
        vmax=vmax,
        origin="upper" if top_down else "lower",
        extent=extent,
        aspect="auto",
        interpolation="none",
    )


def _annotate_cells(axes, values: np.ndarray, *, vmax: float) -> None:
    for row, column in zip(*np.nonzero(np.isfinite(values)), strict=True):
        value = values[row, column]
        color = "white" if value > _DARK_CELL * vmax else "black"
        axes.text(column + 0.5, row + 0.5, f"{value:.0%}", ha="center", va="center", fontsize=7, color=color)


def cohort_heatmap(
    rates: np.ndarray,
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    x_label: str,
    y_label: str,
    color_label: str,
    annotate: bool,
    title: str,
) -> str:
    """Draw a cohort retention heatmap.

    Every customer of a cohort buys in period 0, so that column is 100% and the colour scale ends
    at the highest rate in the later periods instead. Otherwise those rates, often below 30%,
    would all look alike.

    Parameters
    ----------
    rates : ndarray of shape (n_cohorts, n_periods)
        Retention rates in [0, 1]; NaN where the cell was not observed.
    row_labels, column_labels : sequence of str
        One label per cohort (row, oldest first) and per period since the first purchase.
    x_label, y_label, color_label, title : str
        Axis, colour bar and accessible chart titles, already translated.
    annotate : bool
        Write the percentage into each cell. Only readable on small grids.

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    n_rows, n_columns = rates.shape
    later = rates[:, 1:]
    color_max = float(np.nanmax(later)) if np.isfinite(later).any() else 1.0
    color_max = color_max if color_max > 0 else 1.0
    with _chart_style("cohorts"):
        figure = _figure(_height_for_rows(n_rows))
        axes = figure.add_subplot()
        mesh = _draw_heatmap(axes, rates, x_range=(0, n_columns), top_down=True, vmax=color_max)
        if annotate:
            _annotate_cells(axes, rates, vmax=color_max)

        _set_category_ticks(axes.xaxis, column_labels)
        _set_category_ticks(axes.yaxis, row_labels)
        axes.set_xlabel(_plain(x_label))
        axes.set_ylabel(_plain(y_label))
        colorbar = figure.colorbar(
            mesh, ax=axes, format=PercentFormatter(xmax=1.0, decimals=0), shrink=0.8, aspect=25,
            extend="max" if color_max < 1.0 else "neither",
        )
        colorbar.set_label(_plain(color_label))
        return _to_svg(figure, chart_id="cohorts", title=title)


def _set_category_ticks(axis, labels: Sequence[str]) -> None:
    """Label cells of width 1 starting at 0, thinning the labels so that at most a readable number show."""
    step = max(1, int(np.ceil(len(labels) / _MAX_TICK_LABELS)))
    positions = np.arange(0, len(labels), step)
    axis.set_ticks(positions + 0.5, [_plain(labels[index]) for index in positions])


def _log_tick(value: float, _position: int) -> str:
    """Label a logarithmic axis with plain numbers (``1,000``, ``0.1``) instead of powers of ten."""
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def value_histogram(
    values: np.ndarray, *, log_scale: bool, bins: int, x_label: str, y_label: str, title: str
) -> str:
    """Draw a histogram of ``values`` (1-D, finite, non-empty), on logarithmic bins when ``log_scale``.

    With ``log_scale`` the caller passes only positive values. The bin counts are computed with
    :func:`numpy.histogram` over all values, so the SVG size does not grow with the data.
    """
    if log_scale:
        low, high = float(values.min()), float(values.max())
        edges = np.geomspace(low, high if high > low else low * 10.0, bins + 1)
    else:
        edges = np.histogram_bin_edges(values, bins=bins)
    counts, edges = np.histogram(values, bins=edges)

    with _chart_style("clv-histogram"):
        figure = _figure(3.4)
        axes = figure.add_subplot()
        axes.stairs(counts, edges, fill=True, color=_ACTUAL_COLOR, alpha=0.85)
        if log_scale:
            axes.set_xscale("log")
            axes.xaxis.set_major_formatter(FuncFormatter(_log_tick))
        axes.set_xlabel(_plain(x_label))
        axes.set_ylabel(_plain(y_label))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        return _to_svg(figure, chart_id="clv-histogram", title=title)


def lorenz_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    equality_label: str,
    x_label: str,
    y_label: str,
    title: str,
) -> str:
    """Draw concentration curves: the cumulative share of value against the share of customers.

    Parameters
    ----------
    curves : mapping of str to (ndarray, ndarray)
        For each translated series name, the share of customers ranked from the most valuable
        down (x, in [0, 1]) and the share of the total value they hold (y).
    equality_label : str
        Legend text for the diagonal, where every customer has the same value.
    """
    with _chart_style("lorenz"):
        figure = _figure(3.6, width=6.0)
        axes = figure.add_subplot()
        for (name, (shares, cumulative)), color in zip(curves.items(), _SERIES_COLORS, strict=False):
            axes.plot(shares, cumulative, color=color, label=_plain(name), linewidth=1.6)
        axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label=_plain(equality_label))
        axes.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        axes.set_xlim(0, 1)
        axes.set_xlabel(_plain(x_label))
        axes.set_ylabel(_plain(y_label))
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", frameon=False)
        return _to_svg(figure, chart_id="lorenz", title=title)


def segment_shares(
    labels: Sequence[str], shares: Mapping[str, np.ndarray], *, x_label: str, title: str
) -> str:
    """Draw grouped horizontal bars: for each segment, its share of customers and of each value.

    Parameters
    ----------
    labels : sequence of str
        Segment labels, top to bottom.
    shares : mapping of str to ndarray of shape (len(labels),)
        For each translated measure name, each segment's share of the total (NaN = undefined,
        drawn as no bar).
    """
    n_segments = len(labels)
    n_measures = len(shares)
    with _chart_style("segments"):
        figure = _figure(_height_for_rows(n_segments * max(n_measures, 1) * 0.6 + 1))
        axes = figure.add_subplot()

        bar_height = 0.8 / max(n_measures, 1)
        positions = np.arange(n_segments)
        for index, ((name, values), color) in enumerate(zip(shares.items(), _SERIES_COLORS, strict=False)):
            offset = (index - (n_measures - 1) / 2) * bar_height
            widths = np.nan_to_num(values, nan=0.0)
            axes.barh(positions + offset, widths, height=bar_height, color=color, label=_plain(name))

        axes.set_yticks(positions, [_plain(label) for label in labels])
        axes.invert_yaxis()
        axes.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        axes.set_xlabel(_plain(x_label))
        axes.grid(axis="x", alpha=0.3)
        figure.legend(loc="outside upper center", ncols=max(n_measures, 1), frameon=False)
        return _to_svg(figure, chart_id="segments", title=title)


def alive_heatmap(
    means: np.ndarray,
    *,
    recency_range: tuple[float, float],
    frequency_labels: Sequence[str],
    x_label: str,
    y_label: str,
    color_label: str,
    title: str,
) -> str:
    """Draw mean probability alive on a frequency (rows) by recency (columns) grid.

    Parameters
    ----------
    means : ndarray of shape (n_frequency_bins, n_recency_bins)
        Mean P(alive) of the customers in each cell; NaN where a cell has no customers.
    recency_range : (float, float)
        Lower edge of the first and upper edge of the last recency bin, in time units. The
        recency bins are of equal width.
    frequency_labels : sequence of str
        One label per frequency row, lowest frequency first.
    """
    n_rows = means.shape[0]
    with _chart_style("alive"):
        figure = _figure(_height_for_rows(n_rows))
        axes = figure.add_subplot()
        mesh = _draw_heatmap(axes, means, x_range=recency_range, top_down=False)
        _set_category_ticks(axes.yaxis, frequency_labels)
        axes.set_xlabel(_plain(x_label))
        axes.set_ylabel(_plain(y_label))
        colorbar = figure.colorbar(mesh, ax=axes, format=PercentFormatter(xmax=1.0, decimals=0), shrink=0.8, aspect=25)
        colorbar.set_label(_plain(color_label))
        return _to_svg(figure, chart_id="alive", title=title)


def tracking_plot(
    period_start: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    *,
    calibration_end: np.datetime64 | None,
    labels: Mapping[str, str],
    title: str,
) -> str:
    """Draw actual and predicted repeat purchases per period and cumulated, side by side.

    Parameters
    ----------
    period_start : ndarray of datetime64, shape (n_periods,)
        Start of each period, ascending.
    actual, predicted : ndarray of shape (n_periods,)
        Repeat purchases in each period, observed and expected by the model.
    calibration_end : numpy.datetime64 or None
        Where to draw the vertical line between the calibration and holdout periods.
    labels : mapping of str to str
        Translated texts under the keys ``actual``, ``predicted``, ``calibration_end``,
        ``incremental``, ``cumulative`` (the two panel titles) and ``y`` (the y-axis label).
    """
    with _chart_style("tracking"):
        figure = _figure(3.6)
        incremental, cumulative = figure.subplots(1, 2)
        panels = ((incremental, actual, predicted, labels["incremental"]),
                  (cumulative, np.cumsum(actual), np.cumsum(predicted), labels["cumulative"]))
        for axes, observed, expected, panel_title in panels:
            axes.plot(period_start, observed, color=_ACTUAL_COLOR, linewidth=1.5, label=_plain(labels["actual"]))
            axes.plot(
                period_start, expected, color=_PREDICTED_COLOR, linewidth=1.5, linestyle="--",
                label=_plain(labels["predicted"]),
            )
            if calibration_end is not None:
                axes.axvline(
                    calibration_end, color="grey", linestyle=":", linewidth=1.2, label=_plain(labels["calibration_end"])
                )
            axes.set_title(_plain(panel_title), fontsize=10)
            axes.set_ylabel(_plain(labels["y"]))
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
            axes.grid(alpha=0.3)
            axes.tick_params(axis="x", labelrotation=30)
        handles, names = incremental.get_legend_handles_labels()
        figure.legend(handles, names, loc="outside upper center", ncols=len(handles), frameon=False)
        return _to_svg(figure, chart_id="tracking", title=title)
