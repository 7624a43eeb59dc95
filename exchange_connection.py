"""Opening the connection to the exchange: the embedded simulator or a remote URL.

This is the ONE place where product code touches the ``simulator`` package
(DESIGN.md: "The product touches simulator/ only in the one function that starts the
embedded default"). Everything above it receives a ``CoincallClient`` and cannot tell a
paper account on the embedded simulator from testnet or production: the same signed HTTP
requests go over a real socket either way, so paper trading exercises the real client.
A backtest (``Settings.sim_transport == "inprocess"``) keeps the client and its signed
requests but hands them to the simulator's request pipeline without the socket.

``simulator`` is imported lazily inside ``open_exchange`` so that a production process
never even loads the simulator's modules.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from capture import CaptureWriter, Redactor
from clock import Clock, RealClock
from coincall_client import ClientSettings, CoincallClient, ResponseObserver
from config import Credentials, Settings
from errors import ConfigError
from exchange_assumptions import AssumptionSet, load_assumptions
from seams import EmbeddedSimulator

if TYPE_CHECKING:  # pragma: no cover - typing only, never imported at run time here
    from simulator import SimulatorConfig

logger = logging.getLogger(__name__)

EMBEDDED_SOURCE = "embedded simulator"


@dataclass
class ExchangeConnection:
    """A live client plus, in paper mode, the simulator it talks to.

    ``close()`` releases both, client first, so that the simulator's state file is written
    after the last request has been answered. Closing twice is harmless.
    """

    client: CoincallClient
    base_url: str
    simulator: EmbeddedSimulator | None = None
    checkpoint_interval_seconds: float | None = 60.0
    # The key pair the client signs with (the embedded simulator's own in paper mode), for
    # ``doctor``'s raw probes; never part of a repr.
    credentials: Credentials | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)
    _last_checkpoint: float | None = field(default=None, repr=False)

    @property
    def is_embedded(self) -> bool:
        return self.simulator is not None

    def checkpoint(self, now: float) -> bool:
        """Save the embedded paper account at most once per ``checkpoint_interval_seconds``.

        A clean stop saves it too; this bounds what a SIGKILL or power cut can lose to one
        interval. Returns True when a save happened. A failed save is logged, never raised:
        paper-account persistence must not stop the daemon.
        """
        if self.simulator is None or self._closed or self.checkpoint_interval_seconds is None:
            return False
        if self._last_checkpoint is None:
            self._last_checkpoint = now
            return False
        if now - self._last_checkpoint < self.checkpoint_interval_seconds:
            return False
        self._last_checkpoint = now
        try:
            self.simulator.save_state()
        except OSError:
            logger.exception("could not save the embedded simulator's state; will retry")
            return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            if self.simulator is not None:
                logger.info("stopping the embedded simulator (its state is saved)")
                self.simulator.stop()

    def __enter__(self) -> ExchangeConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def client_settings_for(settings: Settings, base_url: str, *, get_retries: int | None = None,
                        assumptions: AssumptionSet | None = None) -> ClientSettings:
    """The HTTP client's settings derived from the daemon's ``Settings``.

    ``get_retries`` overrides how often a failed GET is retried inside the call (the
    client's default otherwise); the daemon passes 0, see ``app.build_context``.
    ``assumptions``: the exchange override file's answers for the client-owned assumptions
    (``exchange_assumptions``) replace the documented defaults; an explicit environment
    variable still wins over the file.
    """
    derived = ClientSettings(
        base_url=base_url,
        ts_diff_ms=settings.ts_diff_ms,
        timeout_seconds=settings.request_timeout_seconds,
        rfq_body_encoding=settings.rfq_body_encoding,
        outage_alert_seconds=settings.exchange_outage_alert_seconds,
    )
    if assumptions is not None:
        overrides = assumptions.client_overrides()
        if overrides:
            logger.info("exchange overrides in force (%s): %s", assumptions.path,
                        ", ".join(f"{name}={value!r}" for name, value in sorted(overrides.items())))
            derived = replace(derived, **overrides)
    return derived if get_retries is None else replace(derived, max_retries=int(get_retries))


def assumptions_for(settings: Settings) -> AssumptionSet:
    """The exchange assumptions in force for ``settings``: defaults, the override file, then the
    explicitly set variables. A broken override file, or one written in another environment,
    is a ``ConfigError`` (exit 2)."""
    explicit = {"COINCALL_TS_DIFF_MS": settings.ts_diff_ms, "COINCALL_RFQ_BODY_ENCODING": settings.rfq_body_encoding}
    return load_assumptions(settings.overrides_path, environment=settings.environment,
                            explicit_env={k: v for k, v in explicit.items() if k in settings.explicit_settings})


def capture_observer(settings: Settings, clock: Clock) -> CaptureWriter | None:
    """The daemon's bounded payload capture (``CAPTURE_DIR`` for ``CAPTURE_SECONDS``), or None."""
    if settings.capture_dir is None:
        return None
    secrets = [settings.credentials.api_key, settings.credentials.api_secret] if settings.credentials else []
    writer = CaptureWriter(Path(settings.capture_dir), clock, Redactor(secrets),
                           until=clock.now() + settings.capture_seconds, environment=settings.environment).open()
    logger.warning("payload capture on: the exchange's answers, redacted, go to %s for %g s",
                   settings.capture_dir, settings.capture_seconds)
    return writer


def open_exchange(
    settings: Settings,
    clock: Clock,
    *,
    sim_config: SimulatorConfig | None = None,
    get_retries: int | None = None,
    observer: ResponseObserver | None = None,
) -> ExchangeConnection:
    """Connect to the exchange that ``settings`` names.

    * ``sim`` without ``base_url``: start the embedded simulator on a free loopback port,
      sharing ``clock`` (so ``--speed`` moves the exchange and the daemon together), with
      its paper account persisted in ``settings.sim_state_file``; with
      ``settings.sim_transport == "inprocess"`` it binds no port and the client's sessions
      reach it through the in-process adapter.
    * otherwise: a client for ``settings.base_url`` with the configured credentials.

    ``sim_config`` lets tests choose simulator behaviour (faults, seeds); it is ignored
    when no simulator is embedded. ``get_retries``: see ``client_settings_for``.
    ``observer`` sees every answer (``doctor``); without one, ``CAPTURE_DIR`` starts the
    daemon's bounded payload capture. The exchange override file is read here
    (``exchange_assumptions``): a broken one raises ``ConfigError``.
    """
    assumptions = assumptions_for(settings)
    if observer is None:
        observer = capture_observer(settings, clock)
    if settings.embeds_simulator:
        return _open_embedded(settings, clock, sim_config, get_retries, observer, assumptions)
    if settings.base_url is None or settings.credentials is None:
        # load_settings() never builds this; a hand-made Settings might.
        raise ValueError(f"{settings.environment} needs a base URL and credentials; build Settings with load_settings()")
    client = CoincallClient(client_settings_for(settings, settings.base_url, get_retries=get_retries,
                                                assumptions=assumptions),
                            settings.credentials, clock, observer=observer)
    logger.info("connecting to %s (%s)", settings.base_url, settings.environment)
    return ExchangeConnection(client=client, base_url=settings.base_url, credentials=settings.credentials)


def _open_embedded(settings: Settings, clock: Clock, sim_config: SimulatorConfig | None,
                   get_retries: int | None = None, observer: ResponseObserver | None = None,
                   assumptions: AssumptionSet | None = None) -> ExchangeConnection:
    from simulator import SimulatorConfig, start_simulator  # lazy: see module docstring

    if sim_config is not None:
        config = sim_config
    elif settings.sim_scenario is not None:
        from simulator.scenarios import scenario_market  # lazy, as above
        market = scenario_market(settings.sim_scenario, settings.sim_seed, clock.now_ms())
        config = SimulatorConfig(seed=settings.sim_seed, market=market)
        logger.info("embedded simulator market: scenario %s", settings.sim_scenario)
    elif settings.sim_history_file is not None:
        config = SimulatorConfig(seed=settings.sim_seed, history_file=str(settings.sim_history_file))
        logger.info("embedded simulator market: recorded history %s", settings.sim_history_file)
    else:
        config = SimulatorConfig(seed=settings.sim_seed)
    settings.sim_state_file.parent.mkdir(parents=True, exist_ok=True)
    inprocess = settings.sim_transport == "inprocess"
    handle = start_simulator(config, clock=clock, state_file=str(settings.sim_state_file), listen=not inprocess)
    try:
        credentials = Credentials(handle.api_key, handle.api_secret, source=EMBEDDED_SOURCE)
        client_settings = client_settings_for(settings, handle.base_url, get_retries=get_retries,
                                              assumptions=assumptions)
        if inprocess:
            from simulator import inprocess_session_factory  # lazy, as above
            client = CoincallClient(client_settings, credentials, clock,
                                    session_factory=inprocess_session_factory(handle), observer=observer)
        else:
            client = CoincallClient(client_settings, credentials, clock, observer=observer)
    except BaseException:
        handle.stop()
        raise
    if inprocess:
        logger.info("embedded simulator serving in-process at %s (state file %s)", handle.base_url,
                    settings.sim_state_file)
    else:
        logger.info("embedded simulator listening on %s (state file %s)", handle.base_url, settings.sim_state_file)
    return ExchangeConnection(client=client, base_url=handle.base_url, simulator=handle,
                              checkpoint_interval_seconds=settings.sim_checkpoint_seconds, credentials=credentials)


def history_span_seconds(path: Path) -> tuple[float, float]:
    """First and last instant (epoch seconds) of a recorded market file (for ``--market FILE``)."""
    from simulator.history import history_span  # lazy: a production process never loads the simulator
    try:
        start_ms, end_ms = history_span(str(path))
    except (OSError, ValueError) as exc:   # unreadable, or not the options_chain layout
        raise ConfigError(f"--market {str(path)!r} cannot be replayed: {exc}") from None
    return start_ms / 1000.0, end_ms / 1000.0


def scenario_names() -> tuple[str, ...]:
    """The market scenarios the embedded simulator knows (for a backtest's ``--scenario``)."""
    from simulator.scenarios import SCENARIOS  # lazy: a production process never loads the simulator
    return SCENARIOS


def read_server_time(settings: Settings) -> float:
    """The exchange's clock in epoch seconds, read once with a throwaway client.

    Used to start a daemon's simulated clock at the time of a simulator that runs in its
    own process; raises the client's typed errors when the exchange cannot be reached.
    """
    if settings.base_url is None or settings.credentials is None:
        raise ValueError("read_server_time needs a base URL and credentials")
    client = CoincallClient(client_settings_for(settings, settings.base_url), settings.credentials, RealClock())
    try:
        return client.server_time() / 1000.0
    finally:
        client.close()
