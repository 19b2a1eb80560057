"""Audience files for outreach tools: one CSV per next best action, from a finished ``analyze`` run.

An SMS, e-mail or WeChat tool takes a list of recipients and a text. ``export_audiences`` reads the
run's customers.parquet and writes ``audience_<action>.csv`` for every action except ``no_contact``,
each with the customer's id and name, the offer and the personalised message in the chosen language.
The files are UTF-8 with a byte order mark, so that Excel shows Chinese text correctly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from revopt.errors import ConfigError, InputError
from revopt.i18n import message

__all__ = ["AUDIENCE_COLUMNS", "NO_CONTACT", "export_audiences", "load_run_customers", "run_language",
           "sample_messages"]

log = logging.getLogger(__name__)

NO_CONTACT = "no_contact"
# Run columns an audience file carries, in this order. The message and labels follow in the chosen language.
AUDIENCE_COLUMNS = ("customer_id", "customer_name", "next_best_action", "action_product", "coupon_value",
                    "action_value", "churn_probability", "clv")
_NEEDED = ("customer_id", "next_best_action", "message_zh", "message_en")


def run_language(run_dir: str | Path) -> str | None:
    """Return the language an ``analyze`` run was written in (from its model.json), or None when unknown."""
    try:
        return json.loads((Path(run_dir) / "model.json").read_text(encoding="utf-8")).get("language")
    except (OSError, ValueError):
        return None


def _suffix(language: str) -> str:
    return "zh" if language == "zh-CN" else "en"


def load_run_customers(run_dir: str | Path) -> pd.DataFrame:
    """Read customers.parquet of an ``analyze`` run; raise InputError naming the fix when it is not one."""
    path = Path(run_dir) / "customers.parquet"
    if not path.is_file():
        raise InputError(message_id="errors.no_run", path=path, run_dir=run_dir)
    try:
        customers = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several classes for a cut-short or foreign file
        raise InputError(message_id="errors.run_unreadable", path=path, detail=str(error).splitlines()[0],
                         run_dir=run_dir) from error
    missing = [column for column in _NEEDED if column not in customers.columns]
    if missing:
        raise InputError(message_id="errors.run_without_actions", path=path, columns=", ".join(missing))
    return customers


def export_audiences(run_dir: str | Path, out_dir: str | Path, language: str) -> dict[str, Path]:
    """Write one audience CSV per action into ``out_dir``; return the files by action.

    Customers within a file are ordered by the action's expected value, highest first, so a tool
    that can only reach part of the list reaches the most valuable part.
    """
    customers = load_run_customers(run_dir)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(message_id="errors.bad_out_dir", path=out, detail=error.strerror or error) from error
    for stale in sorted(out.glob("audience_*.csv")):
        # Files of an earlier export would mix with this run's audiences.
        stale.unlink()
        log.info("event=audience_removed path=%s reason=left by an earlier export", stale)
    suffix = _suffix(language)
    written: dict[str, Path] = {}
    for action, group in customers[customers.next_best_action != NO_CONTACT].groupby("next_best_action", sort=True):
        columns = [column for column in AUDIENCE_COLUMNS if column in group.columns]
        frame = group.sort_values(["action_value", "customer_id"], ascending=[False, True])[columns].copy()
        frame.insert(3, "action_label", group[f"next_best_action_{suffix}"] if f"next_best_action_{suffix}" in group
                     else action)
        frame["message"] = group[f"message_{suffix}"]
        for column in ("coupon_value", "action_value", "clv"):
            if column in frame:
                frame[column] = frame[column].round(2)
        if "churn_probability" in frame:
            frame["churn_probability"] = frame["churn_probability"].round(4)
        path = out / f"audience_{action}.csv"
        frame.to_csv(path, index=False, encoding="utf-8-sig")
        written[str(action)] = path
        log.info("event=audience_written action=%s customers=%d path=%s", action, len(frame), path)
    return written


def sample_messages(run_dir: str | Path, language: str, *, action: str | None = None, n: int = 3) -> list[dict]:
    """Up to ``n`` messages per action (or of one ``action``), from the customers with the highest value.

    Raises
    ------
    InputError
        If ``action`` is given and no customer of the run has it as next best action.
    """
    customers = load_run_customers(run_dir)
    suffix = _suffix(language)
    contacted = customers[customers.next_best_action != NO_CONTACT]
    if action == NO_CONTACT:
        raise InputError(message_id="errors.no_contact_no_message")
    if action is not None:
        contacted = contacted[contacted.next_best_action == action]
        if contacted.empty:
            present = ", ".join(sorted(customers.next_best_action.unique()))
            raise InputError(message_id="errors.no_such_action", action=action, present=present)
    samples = []
    for code, group in contacted.groupby("next_best_action", sort=True):
        top = group.sort_values(["action_value", "customer_id"], ascending=[False, True]).head(n)
        label = message(f"actions.label.{code}", language)
        for row in top.itertuples():
            samples.append({"action": code, "label": label, "customer_id": row.customer_id,
                            "text": getattr(row, f"message_{suffix}")})
    return samples
