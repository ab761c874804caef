"""Names `vulture` (run by `make lint`) cannot see used, each with who uses it.

vulture matches by name: listing `_.name` here marks every definition of that name used.
Only names that something outside our own calls reads belong here; code that nothing reads
is deleted instead. Groups registered by a decorator (FastAPI routes, typer commands,
pydantic validators, SQLAlchemy event listeners) are ignored in pyproject.toml
([tool.vulture] ignore_decorators), `model_config` there too.
"""

from types import SimpleNamespace

_ = SimpleNamespace()

# pydantic fields that are only serialized (REST answers, signed receipts, config
# documents): set through the constructor, read by `model_dump`/FastAPI, never by name.
_.decided_elsewhere  # DecisionsOut
_.alg  # PublicKey, SignedReceipt
_.pem  # PublicKey
_.audit_entry_id  # ReceiptBody
_.audit_entry_hash
_.job_state  # TurnOut
_.outputs_today  # AgentUsage
_.tokens_today
_.api_version  # ConfigDocument's `apiVersion`, validated as cosmo/v1
_.content_size  # Output (and its column)
_.notification_status  # Output (and its column)
_.unusable_skills  # AgentView
_.ended_at  # SessionView (and its column, set when a session ends)

# ORM columns written through insert/update values and kept for the record.
_.bound_by  # who bound a channel to an agent
# Never written (approval messages live in `output_messages`): still mapped because the
# previous release selects them during a rolling upgrade; a contract migration drops them.
_.slack_channel
_.slack_ts

# FastAPI dependency parameter declared for the OpenAPI document (`X-Cosmo-Tenant`);
# `authorize` reads the header from the request itself.
_.x_cosmo_tenant

# Methods a library calls on our subclasses or plug-ins.
_.format  # logging.Formatter (bot/cli/logging_setup.py)
_.handle_starttag  # html.parser.HTMLParser (core/knowledge/extractors.py)
_.handle_endtag
_.handle_data
_.impl  # sqlalchemy TypeDecorator (core/db/types.py)
_.cache_ok
_.process_bind_param
_.process_result_value
_._can_retry_async  # slack_sdk AsyncRetryHandler (bot/slack/limiter.py)
_.prepare_for_next_attempt_async
_.async_save_bot  # Bolt's AsyncInstallationStore / AsyncOAuthStateStore (bot/slack/oauth.py)
_.async_find_bot
_.async_delete_bot
_.async_delete_installation
_.async_issue
_.async_consume
_.handle_async  # anthropic.Middleware (core/agent/anthropic_client.py)
_.embed_batch  # mem0's embedder interface (core/memory/mem0_provider.py)
_.memory_action  # ... whose methods mem0 calls with this argument
_.exc_type  # __aexit__'s signature (core/skills/mcp_executor.py)
_.exc_val
_.exc_tb
_.__call__  # the Resolver Protocol's one member (core/webhooks/url_guard.py)

# Attributes we set for a library to read.
_.metavar  # click renders it in --help (bot/cli/main.py)
_.next_attempt_requested  # slack_sdk RetryState
_.callback_options  # Bolt's OAuth settings
_.wss_uri  # slack_sdk Socket Mode client
_.writeable  # numpy array flags: the embedder's weights are read-only
_.isolation_level  # sqlite3 connection: autocommit at the driver, SQLAlchemy issues BEGIN

# Test seams: product code that tests (and bench/) call or read, nothing else.
_.bound_to  # Database on a test's connection, rolled back after each test
_.drain  # SlackRuntime: wait for the background work a test started
_.ingest  # KnowledgeService: synchronous ingest for tests and bench (the product queues jobs)
_.connections_opened  # McpPool: tests count reconnections
_.rate_limited  # SlackLimiter: tests count the 429s it paused for
_.transactions  # JobIntake: tests count the commits a batch shares
