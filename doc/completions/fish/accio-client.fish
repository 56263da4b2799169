complete -c accio-client -l progress -d 'Show progress on stderr: bar, bytes, rates, ETA (default: only if stderr is a terminal)'
complete -c accio-client -l no-progress -d 'Never show progress'
complete -c accio-client -s h -l help -d 'Print help'
complete -c accio-client -s V -l version -d 'Print version'
