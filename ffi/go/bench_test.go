package sidekick

import "testing"

// BenchmarkPickDone measures one Pick + Done pair through cgo and the C ABI, with the setup of
// ffi/bench/bench.c and the Rust figure: one site of 4 endpoints, probes off (nothing is
// contacted), default policy, latency measured by the balancer.
func BenchmarkPickDone(b *testing.B) {
	bal, err := New([]string{"http://127.0.0.1:{10001...10004}"}, Options{DisableHealthCheck: true})
	if err != nil {
		b.Fatal(err)
	}
	defer bal.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := bal.Pick()
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Done(OutcomeSuccess, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPickDoneParallel is the same pair from GOMAXPROCS goroutines at once.
func BenchmarkPickDoneParallel(b *testing.B) {
	bal, err := New([]string{"http://127.0.0.1:{10001...10004}"}, Options{DisableHealthCheck: true})
	if err != nil {
		b.Fatal(err)
	}
	defer bal.Close()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, err := bal.Pick()
			if err != nil {
				b.Error(err)
				return
			}
			l.Done(OutcomeSuccess, 0, 0)
		}
	})
}
