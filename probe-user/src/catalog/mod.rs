//! What gwtrace knows by name, in one place: the causes it names ([`Cause`]: ids, status class,
//! meaning), the proxies, app servers, launchers and supervisors it recognises, the one rule
//! for which processes are proxies ([`ProxyRule`]), and the one reader of app servers' command
//! lines ([`AppCommand`], [`gunicorn_settings`], ...); the sockets the system itself provides
//! ([`system_socket`]: a proxy's connects to them are never symptoms).
mod appcmd;
mod cause;
mod names;
mod system;

pub use appcmd::{
    AppCommand, AppSettings, KillSetting, Sourced, gunicorn_config_arg, gunicorn_settings,
    php_fpm_config_arg, php_fpm_includes, php_fpm_settings, php_fpm_terminate_timeout,
    uvicorn_settings, uwsgi_ini_arg, uwsgi_settings,
};
pub use cause::{Cause, UnknownCause};
pub use names::{
    APP_SERVERS, LAUNCHERS, PROXY_NAMES, ProcNames, ProxyRule, SUPERVISORS, app_server_in_cmdline,
    app_server_name, default_proxy_names,
};
pub use system::{DNS_PORT, SYSTEM_SOCKETS, SystemSocket, system_socket};
