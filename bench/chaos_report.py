"""The chaos drill's one table: every figure beside what was expected of it; returns whether every promise held."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _failed_by_reason(report: dict[str, Any]) -> str:
    groups = report.get("failures") or []
    return ", ".join(f"{g['reason']} {g['count']}" for g in groups) or "none"


def rows(figures: dict[str, Any], *, cap: int, hard_stop_s: int) -> list[tuple[str, str, str, bool | None]]:
    """(what, figure, expected, ok) — ok None for figures that are information only."""
    manifest = figures.get("manifest", {})
    report = figures.get("report") or {}
    totals = report.get("totals") or {}
    server = figures.get("server") or {}
    kill = figures.get("kill") or {}
    redis = figures.get("redis") or {}
    s3 = figures.get("s3") or {}
    versions = figures.get("versions") or {}
    interrupted = figures.get("interrupted") or {}
    secrets = figures.get("secrets") or {}
    out: list[tuple[str, str, str, bool | None]] = []
    if not totals:
        out.append(("drill", "stopped before the final reconcile", "a full run", False))
        return out

    lines = int(manifest.get("lines", 0))
    lost = int(totals["missing"]) + int(totals["orphan"])
    terminal = sum(int(totals[k]) for k in ("succeeded", "rejected", "failed", "deferred", "invalid"))
    planted_failures = int(manifest.get("missing_planted", 0)) + int(manifest.get("not_audio_planted", 0))
    out += [
        ("manifest lines", str(lines), f"{terminal} + {lost} lost", terminal + lost == lines),
        ("succeeded", str(totals["succeeded"]), f"{manifest.get('good')} (every good line)",
         totals["succeeded"] == manifest.get("good")),
        ("rejected (400 audio_too_long, tried once)", str(totals["rejected"]), str(manifest.get("rejected_planted")),
         totals["rejected"] == manifest.get("rejected_planted")),
        ("failed, by reason", f"{totals['failed']}: {_failed_by_reason(report)}",
         f"{planted_failures} (missing_input, not_audio)", totals["failed"] == planted_failures),
        ("invalid (never enqueued)", str(totals["invalid"]), str(manifest.get("invalid_planted")),
         totals["invalid"] == manifest.get("invalid_planted")),
        ("deferred", str(totals["deferred"]), "0", totals["deferred"] == 0),
        ("lost (no terminal record)", str(lost), "0", lost == 0),
    ]
    dup_outputs, dup_prov = len(versions.get("outputs", [])), len(versions.get("provenance", []))
    out.append(("duplicates (keys with >1 version)", f"outputs {dup_outputs}, provenance {dup_prov} "
                f"(of {versions.get('keys', 0)} keys; {versions.get('failure_rewrites', 0)} failure records "
                "rewritten by retries)", "0", dup_outputs + dup_prov == 0))
    over_cap = int(server.get("requests_by_status", {}).get("429", 0)) - int(
        server.get("faults_injected", {}).get("429", 0))
    faults = sum(int(v) for v in (server.get("faults_injected") or {}).values())  # 429, 500, 503 and cut
    out += [
        ("server: requests", f"{server.get('requests_total')} ({faults} with an injected fault, "
         f"{server.get('client_disconnects', 0)} client disconnect(s))", "-", None),
        ("server: peak concurrency / cap", f"{server.get('max_in_flight')} / {cap} "
         f"({over_cap} over-cap 429s)", f"<= {cap}", int(server.get("max_in_flight", cap + 1)) <= cap),
    ]
    spent = int(server.get("successes", 0))
    allowed = int(totals["succeeded"]) + sum(int(v) for v in interrupted.values())
    out.append(("spent successes", f"{spent} for {totals['succeeded']} jobs + {sum(interrupted.values())} "
                f"interrupted (running when hit: SIGKILL {interrupted.get('kill', 0)}, S3 outage "
                f"{interrupted.get('s3', 0)}, Redis restart {interrupted.get('redis', 0)})", f"<= {allowed}",
                spent <= allowed))
    kills = kill.get("kills") or []
    out.append(("worker SIGKILLed mid-stream", "; ".join(
        f"{k['worker']}: {k['held_tasks']} task(s) held, {k['streams_cut']} stream(s) cut, replaced by "
        f"{k['replacement']}" for k in kills) or "-", ">= 1 stream cut", int(kill.get("streams_cut", 0)) >= 1))
    out.append(("Redis restarted empty", f"{redis.get('queued_lost', '-')} queued message(s) lost, "
                f"{figures.get('cancelled_on_connection_loss', 0)} running job(s) cancelled; "
                f"{redis.get('reconnected', 0)}/{redis.get('workers', 0)} workers reconnected",
                "all reconnect", bool(redis) and redis.get("restarted_empty") is True
                and redis.get("reconnected") == redis.get("workers")))
    consumed = figures.get("consumed_after_reconnect") or {}
    out.append(("  ... then consumed jobs", ", ".join(f"{name} {n}" for name, n in consumed.items()) or "-",
                "every worker > 0", bool(consumed) and all(n > 0 for n in consumed.values())))
    submit = figures.get("submit_wait") or {}
    out.append(("  ... submit --wait (run state wiped)",
                ("still waiting after 30 s (killed)" if submit.get("exit") is None else
                 f"exit {submit.get('exit')} {submit.get('ended_after_s')} s after Redis came back empty"
                 + (", with a traceback" if submit.get("traceback") else "")) + f": {submit.get('last_line', '')}",
                "ends by itself, one clear line", submit.get("exit") not in (None, 0) and not submit.get("traceback")
                and "live state is gone" in str(submit.get("last_line")) and submit.get("ended_after_s", -1) >= 0))
    leftovers = figures.get("guard_leftovers") or {}
    negative = int(figures.get("negative_unclean_in_provenance", 0))
    out.append(("  ... poison-guard counters", f"{leftovers.get('negative', 0)} negative, "
                f"{leftovers.get('no_ttl', 0)} without TTL (of {leftovers.get('keys', 0)}); {negative} provenance "
                "records with negative unclean deliveries", "0, 0; 0",
                not leftovers.get("negative") and not leftovers.get("no_ttl") and negative == 0))
    out.append(("S3 endpoint outage", f"{s3.get('down_s', '-')} s on the same port; objects "
                f"{s3.get('objects_before', '-')} -> {s3.get('objects_after', '-')}; "
                f"{figures.get('s3_requeues', 0)} job re-queues", "data kept",
                bool(s3.get("data_kept"))))
    rounds = figures.get("rounds") or []
    out.append(("reconcile + retry rounds", f"{len(rounds)} (" + ", ".join(
        f"{r['retryable']} retryable" for r in rounds) + ")", "nothing retryable left", lost == 0))
    scanned = ", ".join(f"{n} {what}" for what, n in (secrets.get("scanned") or {}).items())
    out.append(("secret hits (API key, AWS secret)", f"{secrets.get('total', '?')} with "
                f"{secrets.get('scanner', '?')} (redis "
                f"{len(secrets.get('redis', []))}, s3 {len(secrets.get('s3', []))}, logs "
                f"{len(secrets.get('logs', []))}; scanned {scanned})", "0", secrets.get("total") == 0))
    wall = float(figures.get("wall_s", hard_stop_s + 1))
    out.append(("wall time", f"{wall:.0f} s", f"<= {hard_stop_s} s", wall <= hard_stop_s))
    return out


def print_table(figures: dict[str, Any], *, cap: int, hard_stop_s: int, console: Console | None = None) -> bool:
    table = Table(title=f"chaos drill, {figures.get('when', '')}, {figures.get('machine', '')}")
    for column in ("what", "figure", "expected", "ok"):
        table.add_column(column)
    everything = rows(figures, cap=cap, hard_stop_s=hard_stop_s)
    for what, figure, expected, ok in everything:
        mark = "" if ok is None else ("yes" if ok else "[bold red]NO")
        table.add_row(what, figure, expected, mark)
    (console or Console(width=160)).print(table)
    return all(ok is not False for *_, ok in everything)
