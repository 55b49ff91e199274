"""Why an RLVR run stops, as exception types: raised by the actors' Ray layer, the weight sync and the trainer, and
caught by the CLI (rlvr.driver: exit code 1). Here, in a module that imports nothing, so that the CLI can name them
without loading Ray or torch."""


class ActorFailure(RuntimeError):
    """A generator or learner actor died or stopped answering; the run cannot continue (resume from the last
    checkpoint)."""


class StartupError(RuntimeError):
    """The actors could not be placed, or a group could not form, within resources.startup_timeout_s."""


class TrainingStopped(RuntimeError):
    """The run cannot continue (reward error budget, a failed actor, a failed weight sync)."""


class WeightSyncError(RuntimeError):
    """A weight sync failed: a group did not form, a broadcast stalled, or a generator disagrees after a sync."""
