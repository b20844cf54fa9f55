"""Rules: channel states, rates against targets, alert rules."""

# alert_config subclasses camwatch.config._Model, and camwatch.config imports alert_config:
# importing the config first makes any import order work.
import camwatch.config  # noqa: F401
