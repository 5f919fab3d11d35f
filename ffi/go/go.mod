module github.com/sidekick-lb/sidekick/ffi/go

go 1.19
