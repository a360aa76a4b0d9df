"""The storefront persona agent: a second system beside the CX-Fulfillment Agent.

For a brand's web shop (creative tools and supplies) it classifies each visitor's persona in
real time, recommends the next best product or tutorial, and runs a bandit over hero images and
calls to action per micro-segment (persona x device x channel), with an event stream, a
feature store and experiment logs. It shares ``cxagent.stats`` (intervals, sequential tests,
off-policy evaluation) with the experiments of the CX-Fulfillment Agent.

    events (stream) -> features (feature store) -> persona -> advisor / bandit -> service + widget
                                                                   \\-> experiment logs

Modules: ``events`` (the event and the session's features, a pure fold), ``sessions`` (a
synthetic clickstream for tests and demos), ``persona`` (taxonomy learned from real sessions,
real-time classifier), ``bandit`` (Thompson sampling per micro-segment with logged
propensities), ``stream`` / ``features`` / ``logs`` (Redis Streams, Redis feature store,
PostgreSQL logs, and embedded defaults), ``advisor``, ``service`` (HTTP), ``widget``.
"""
