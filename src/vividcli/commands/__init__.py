"""The `vividvr` commands, one module each (restore, caption, degrade, evaluate, compare, doctor, cache,
models) plus what they share (`common`: the one-line error exit; `options`: shared option types).
`vividcli.cli` only wires them into the app."""
