// A Go user's program, built outside the repository by ffi/test.sh the way the README's Go
// section says (go mod init, go get the module, the one build step, go build):
//
//	consumer http://127.0.0.1:P1,http://127.0.0.1:P2 [SITE...]
//
// It sends 20 GETs through sidekick.Transport to the backends of ffi/tests/server.py (each
// argument is one site), checks every answer and prints which backends served them. Exits 1 on
// the first wrong answer.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	sidekick "github.com/sidekick-lb/sidekick/ffi/go"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run(sites []string) error {
	if len(sites) == 0 {
		return fmt.Errorf("usage: consumer SITE [SITE...]")
	}
	b, err := sidekick.New(sites, sidekick.Options{HealthPath: "/health", HealthInterval: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Ready(10 * time.Second); err != nil {
		return err
	}
	client := &http.Client{Transport: &sidekick.Transport{Balancer: b}, Timeout: 10 * time.Second}
	served := map[string]int{}
	for i := 0; i < 20; i++ {
		resp, err := client.Get(fmt.Sprintf("http://bucket.virtual/key/%d", i))
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		want := fmt.Sprintf("ok GET /key/%d host=bucket.virtual", i)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), want) {
			return fmt.Errorf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
		served[resp.Header.Get("X-Backend")]++
	}
	fmt.Printf("20 GETs through sidekick.Transport, served by %v\n", served)
	return nil
}
