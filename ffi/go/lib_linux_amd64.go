package sidekick

// Where ffi/scripts/build-go-lib.sh puts libsidekick_ffi.a for linux/amd64 (sidekick.go names
// the library and the system libraries it needs).

// #cgo LDFLAGS: -L${SRCDIR}/lib/linux_amd64
import "C"
