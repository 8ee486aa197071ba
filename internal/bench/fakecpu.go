package bench

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"time"

	"github.com/google/pprof/profile"
)

// FakesCPU is the CPU the fake appliance and the fake Devo used during a run, measured by a CPU
// profile of the run: the samples whose goroutines carry the label fake=appliance (the fake
// appliance's handler) or fake=devo (the fake Devo's listener and connections). The fleet's CPU
// without the fakes is the run's CPU (getrusage) less this. Samples are taken 100 times a second,
// so the figure is good to a few hundredths of a second per run; the work the fakes cause in the
// garbage collector and the kernel outside their goroutines (socket buffers, TCP) is not theirs in
// the profile and stays counted as the fleet's.
type FakesCPU struct {
	ApplianceSeconds float64 `json:"appliance_seconds"`
	DevoSeconds      float64 `json:"devo_seconds"`
	// FleetCPUPerMillionEvent is (CPU seconds − the fakes' seconds) per million events.
	FleetCPUPerMillionEvent float64 `json:"fleet_cpu_seconds_per_million_events"`
}

// runProfile is a CPU profile of one run, in memory.
type runProfile struct{ buf bytes.Buffer }

// startRunProfile starts profiling the process, unless a profile is already running (the
// bench's --cpuprofile covers the whole bench, and the runtime allows one at a time): then it
// returns nil and the run reports no FakesCPU.
func startRunProfile() *runProfile {
	p := &runProfile{}
	if err := pprof.StartCPUProfile(&p.buf); err != nil {
		return nil
	}
	return p
}

// stop ends the profile and sums the CPU time of the samples labelled fake=appliance and
// fake=devo.
func (p *runProfile) stop() (appliance, devo time.Duration, err error) {
	pprof.StopCPUProfile()
	prof, err := profile.Parse(&p.buf)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the run's CPU profile: %w", err)
	}
	idx := -1
	for i, st := range prof.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			idx = i
		}
	}
	if idx < 0 {
		return 0, 0, fmt.Errorf("the run's CPU profile has no cpu/nanoseconds samples")
	}
	for _, s := range prof.Sample {
		for _, v := range s.Label["fake"] {
			switch v {
			case "appliance":
				appliance += time.Duration(s.Value[idx])
			case "devo":
				devo += time.Duration(s.Value[idx])
			}
		}
	}
	return appliance, devo, nil
}
