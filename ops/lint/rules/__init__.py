"""One module per rule (yamllint's shape): module docstring = summary line, why, a failing and
a passing example, the fix (printed by `opsctl lint --explain ID`); ID and SEVERITY constants;
check(ctx) yields Problems. The order here is the order of --list-rules; IDs never change."""

from ops.lint.rules import (
    approach_auto,
    approach_fixed,
    approach_proxy,
    base_url_not_loopback,
    base_url_self_loop,
    env_file_not_loaded,
    env_syntax,
    exec_start,
    file_missing,
    file_unreadable,
    host_not_loopback,
    key_not_loaded,
    key_on_command_line,
    key_sk_prefix,
    key_too_short,
    lint_internal,
    litellm_plugin_not_enabled,
    litellm_routing_loop,
    litellm_unprefixed_to_proxy,
    lock_unsatisfied,
    log_debug,
    model_approach_prefix,
    openai_key_missing,
    optillm_api_key_configured,
    optillm_internals,
    optillm_variable,
    other_provider_key,
    optillm_version,
    plugin_not_in_profile,
    process_optillm_api_key,
    provider_file_missing,
    provider_file_writable,
    provider_not_loopback,
    proxy_plugins_unknown,
    request_settings,
    secret_file_mode,
    socket_address,
    unit_syntax,
    upstream_key_in_env_file,
)

RULES = (
    # inputs
    file_missing, file_unreadable,
    # environment
    process_optillm_api_key, optillm_api_key_configured, optillm_variable,
    # env file and the LiteLLM key
    env_syntax, openai_key_missing, upstream_key_in_env_file, other_provider_key, secret_file_mode,
    request_settings,
    # unit
    unit_syntax, exec_start, host_not_loopback, base_url_not_loopback, base_url_self_loop,
    model_approach_prefix, approach_proxy, approach_auto, approach_fixed, log_debug,
    key_on_command_line, key_not_loaded, env_file_not_loaded,
    # socket unit
    socket_address,
    # key file
    key_too_short, key_sk_prefix,
    # provider file
    provider_file_missing, provider_file_writable, provider_not_loopback,
    # LiteLLM config
    litellm_unprefixed_to_proxy, litellm_routing_loop, litellm_plugin_not_enabled,
    # runtime
    optillm_version, optillm_internals, lock_unsatisfied, proxy_plugins_unknown,
    plugin_not_in_profile,
    # lint itself
    lint_internal,
)
