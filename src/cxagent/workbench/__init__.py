"""The workbench's views: computed once from the data and the investigation, kept in the store,
read by the web pages and the JSON API.

``build`` (``cxagent.workbench.build``) computes and stores them; ``Workbench``
(``cxagent.workbench.reader``) reads them. Payloads (plain JSON):

- ``overview``: ``dataset`` {path, source, start, end, orders}; ``as_of`` (the last hour of
  data); ``trend_30d`` {x: days, cx_score, orders} and ``trend_7d`` {x: hours, cx_score,
  orders} for the whole marketplace; ``quick_stats``: the last 7 days against the 28 before,
  one row per metric {metric, label, unit, better: higher|lower, current, baseline, delta}.
- ``incident`` (per incident): ``changes`` (logged changes in the trend's range whose scope
  covers the slice), ``investigation`` (as ``cxagent investigate --json``, without
  the recommendations), ``recommendations`` (as ``cxagent recommend --json``), ``plans``
  [{rank, action, title, markdown, summary}], ``metrics`` (the investigated slice, baseline
  against incident window: rows like quick_stats with before/after/delta), ``trend`` {x: days,
  cx_score, orders, window_start, window_end}, ``drilldown`` {slice key: {slice, label,
  metrics, children: [{key, slice, label, orders, before, after, delta, p_value, stars}]}},
  ``summary`` (for product managers: what_broke, why, recommendation, tradeoff, projection).
- ``merchants``: ``stores`` ranked by CX risk [{store_id, region, category, orders, cx_score,
  baseline, delta, risk, issues: [text]}].
- ``experiment`` (per incident, saved by ``cxagent experiment status``): {path, plan (as a
  plan in ``plans``: its summary), markdown, report (as ``cxagent experiment status --json``)}.
"""
