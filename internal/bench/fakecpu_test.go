package bench

import (
	"context"
	"crypto/sha256"
	"runtime/pprof"
	"testing"
)

// burn does a fixed amount of CPU work (about a tenth of a second on this project's CI machine).
func burn() {
	buf := make([]byte, 1<<20)
	for i := range 64 {
		buf[0] = byte(i)
		sum := sha256.Sum256(buf)
		buf[1] = sum[0]
	}
}

// profilingElsewhere reports whether a CPU profile of the test binary is running (go test
// -cpuprofile), in which case a run cannot profile itself.
func profilingElsewhere() bool {
	p := startRunProfile()
	if p == nil {
		return true
	}
	_, _, _ = p.stop()
	return false
}

// TestRunProfileCountsOnlyTheFakes: the run profile credits the fakes with the samples of the
// goroutines labelled fake=devo (or fake=appliance), not with the rest of the process's work.
func TestRunProfileCountsOnlyTheFakes(t *testing.T) {
	p := startRunProfile()
	if p == nil {
		t.Skip("a CPU profile is already running (go test -cpuprofile)")
	}
	done := make(chan struct{})
	go pprof.Do(context.Background(), pprof.Labels("fake", "devo"), func(context.Context) {
		defer close(done)
		for range 4 {
			burn()
		}
	})
	for range 4 {
		burn() // the fleet's work: not the fakes'
	}
	<-done
	appliance, devo, err := p.stop()
	if err != nil {
		t.Fatal(err)
	}
	if devo <= 0 || appliance != 0 {
		t.Errorf("fake Devo %v, fake appliance %v; want some for the Devo, none for the appliance", devo, appliance)
	}
}
