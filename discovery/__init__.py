"""Issue discovery: segment trends, anomaly detection, root cause, candidate issues, effect of fixes.

Entry points: `discovery.pipeline.discover(tables, scores=None) -> DiscoveryResult`,
`discovery.report.write_discovery(result, out)`, `discovery.report.render_report(result) -> str`
(self-contained HTML for the service), `discovery.effect.effect_of_fix(...)` and
`discovery.evaluate.match_incidents(...)` against the simulator's planted incidents.
"""

# Family-wise level of the scan-size severity floor (DiscoveryConfig.severity_alpha); here,
# not in discovery.pipeline, so the CLI can show it without the pipeline's heavy imports.
DEFAULT_SEVERITY_ALPHA = 0.05
