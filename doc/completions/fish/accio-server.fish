complete -c accio-server -s c -l config -d 'Read settings from this TOML file (and again on SIGHUP)' -r -F
complete -c accio-server -l save-dir -d 'Also save each connection\'s bytes as DIR/<N>.file (overrides `save_dir`)' -r -F
complete -c accio-server -l bind -d 'Listen on this IPv4 or IPv6 address instead of `bind` ("::" is dual-stack)' -r
complete -c accio-server -l output -d 'Each connection\'s stdout line: plain (the count or ERROR) or json' -r
complete -c accio-server -l check-config -d 'Validate the command line and the config file, print one line to stderr, bind nothing'
complete -c accio-server -s h -l help -d 'Print help'
complete -c accio-server -s V -l version -d 'Print version'
