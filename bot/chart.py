"""The digest's chart: win rate by month (last 6 months) and losses by competitor, as PNG."""

from __future__ import annotations

import io


def literal(text: str) -> str:
    """``text`` as matplotlib must be given it to show it as typed: every ``$`` escaped, so
    a name like ``Rival $a_b_c$ Inc`` is never read as mathtext (which it cannot parse)."""
    return text.replace("$", r"\$")


def figure(*, month: str, history: list[tuple[str, float | None, int]], losses: dict[str, int]):
    """The chart as a matplotlib Figure. Every string handed to matplotlib goes through
    :func:`literal`; competitors are sorted by losses (most at the top), each bar labelled
    with its count."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede any pyplot import anywhere
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    labels = [literal(m) for m, _rate, _n in history]
    rates = [(rate * 100) if rate is not None else 0 for _m, rate, _n in history]
    bars = left.bar(labels, rates, color=["#9fb7d9"] * (len(labels) - 1) + ["#1f3a5f"])
    for bar, (_m, rate, n) in zip(bars, history, strict=True):
        text = "no deals" if rate is None else f"{rate:.0%}\n({n})"
        left.annotate(
            literal(text),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_ylim(0, 115)
    left.set_ylabel("win rate (%)")
    left.set_title("Win rate by month (deals decided)")
    left.tick_params(axis="x", labelsize=8)
    top = sorted(losses.items(), key=lambda item: (-item[1], item[0]))[:10]
    if top:
        rows = top[::-1]  # barh draws bottom-up: the most losses at the top
        positions = list(range(len(rows)))
        drawn = right.barh(positions, [n for _name, n in rows], color="#c0504d")
        right.set_yticks(positions, [literal(name) for name, _n in rows])
        right.bar_label(drawn, labels=[str(n) for _name, n in rows], padding=3)
        right.set_xlim(0, max(n for _name, n in rows) * 1.15 + 0.5)
        right.set_xlabel("Lost (deals)")
        right.xaxis.get_major_locator().set_params(integer=True)
    else:
        right.text(0.5, 0.5, "No losses to a competitor", ha="center", va="center")
        right.set_xticks([])
        right.set_yticks([])
    right.set_title(literal(f"Losses by competitor, {month}"))
    fig.tight_layout()
    return fig


def render(
    *, month: str, history: list[tuple[str, float | None, int]], losses: dict[str, int]
) -> bytes:
    """PNG bytes. ``history`` is (YYYY-MM, win rate or None, decided deals) oldest first.

    matplotlib is imported here, once a month, not by every process and command at start
    (it takes about half a second)."""
    out = io.BytesIO()
    figure(month=month, history=history, losses=losses).savefig(out, format="png")
    return out.getvalue()
