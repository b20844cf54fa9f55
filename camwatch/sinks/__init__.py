"""Sinks: where alerts and rates leave camwatch (MQTT, WeCom and DingTalk robots, a generic
webhook, Alertmanager), fed from the store's outbox by :class:`~camwatch.sinks.dispatch.Dispatcher`;
their settings are in :mod:`camwatch.sinks.config`, the metrics exposition in
:mod:`camwatch.sinks.metrics`. Import the module you need: this package imports nothing, so
the config can load the receivers' models without the sinks themselves."""
