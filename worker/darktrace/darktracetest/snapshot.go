package darktracetest

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// statusTimeLayout is /status's "time" field layout (minute precision, UTC).
const statusTimeLayout = "2006-01-02 15:04"

// statusQuery holds /status's parameters.
type statusQuery struct {
	fast         bool
	children     bool
	responseData []string
}

// statusBody returns the /status document for now: the guide's composite example with values
// varied by the seed and the minute, its top-level probes (one of them errored, without an id),
// and two Unified View instances with their own probes.
func (h *Handler) statusBody(now time.Time, q statusQuery) ([]byte, error) {
	v, err := decodeSample("status-apiguide6-cleaned.json")
	if err != nil {
		return nil, err
	}
	m := v.(map[string]any)
	minute := now.Unix() / 60
	rng := rand.New(rand.NewPCG(uint64(h.opts.Seed), mix(serviceIndex[config.ServiceStatus], uint64(minute))))
	ts := now.UTC().Format(statusTimeLayout)
	m["time"] = ts
	m["load"], m["cpu"], m["memoryUsed"] = 5+rng.IntN(60), 5+rng.IntN(60), 40+rng.IntN(55)
	m["dataQueue"], m["darkflowQueue"] = rng.IntN(5), rng.IntN(5)
	m["connectionsPerMinuteCurrent"] = 4000 + rng.IntN(6000)
	m["activeDevicesHour"] = 300 + rng.IntN(300)
	m["uuid"] = seededUUID(uint64(h.opts.Seed), 0)
	probes := m["probes"].(map[string]any)
	p12 := probes["12"].(map[string]any)
	p12["time"] = ts
	p12["load"], p12["cpu"], p12["bandwidthCurrent"] = 5+rng.IntN(60), 5+rng.IntN(60), 100000+rng.IntN(900000)
	instances := map[string]any{}
	for _, inst := range []struct {
		id     int
		probes []int
	}{{1, []int{123}}, {2, []int{456, 457}}} {
		ip := map[string]any{}
		for i, pid := range inst.probes {
			if i > 0 {
				// An errored probe carries no id: take it from the map key.
				ip[fmt.Sprint(pid)] = map[string]any{
					"configuredServer": fmt.Sprintf("10.%d.3.%d", inst.id, pid%200), "ipAddress": fmt.Sprintf("10.%d.3.%d", inst.id, pid%200),
					"label": fmt.Sprintf("vsensor-%d", pid), "error": true, "lastContact": now.UTC().Add(-26 * time.Hour).Format(time.DateTime),
				}
				continue
			}
			ip[fmt.Sprint(pid)] = map[string]any{
				"id": pid, "configuredServer": fmt.Sprintf("vsensor-%d.example.com", pid), "version": p12["version"],
				"ipAddress": fmt.Sprintf("10.%d.2.%d", inst.id, pid%200), "time": ts, "type": "vSensor",
				"load": 5 + rng.IntN(60), "cpu": 5 + rng.IntN(60), "memoryUsed": 10 + rng.IntN(50),
				"osSensors": []string{fmt.Sprintf("10.%d.2.%d", inst.id, 100+pid%100)}, "networkInterfacesState_eth0": "up",
				"bandwidthCurrent": 100000 + rng.IntN(900000), "connectionsPerMinuteCurrent": 50 + rng.IntN(300),
			}
		}
		instances[fmt.Sprint(inst.id)] = map[string]any{
			"id": inst.id, "label": fmt.Sprintf("instance-%d", inst.id), "hostname": fmt.Sprintf("dt-instance-%d.example.com", inst.id),
			"ipAddress": fmt.Sprintf("10.%d.0.1", inst.id), "version": m["version"], "time": ts, "type": "master",
			"uuid": seededUUID(uint64(h.opts.Seed), uint64(inst.id)), "load": 5 + rng.IntN(60), "cpu": 5 + rng.IntN(60),
			"memoryUsed": 40 + rng.IntN(55), "probes": ip,
		}
	}
	m["instances"] = instances
	if q.fast {
		delete(m, "subnetData") // fast=true skips subnet connectivity
	}
	if !q.children {
		delete(m, "probes")
		delete(m, "instances")
	}
	return marshal(restrict(m, q.responseData))
}

// summaryQuery holds /summarystatistics's parameters.
type summaryQuery struct {
	responseData []string
	eventType    string
	endTime      time.Time // zero: now
}

// summaryBody returns the /summarystatistics document for now: the guide's example with 28 daily
// bandwidth points, or the hourly event counts when eventtype is set.
func (h *Handler) summaryBody(now time.Time, q summaryQuery) ([]byte, error) {
	day := now.UTC().Truncate(24 * time.Hour)
	rng := rand.New(rand.NewPCG(uint64(h.opts.Seed), mix(serviceIndex[config.ServiceSummary], uint64(day.Unix()))))
	if q.eventType != "" {
		end := q.endTime
		if end.IsZero() {
			end = now
		}
		end = end.UTC().Truncate(time.Hour)
		data := make([]any, 0, 24)
		for i := 23; i >= 0; i-- {
			t := end.Add(-time.Duration(i) * time.Hour)
			data = append(data, map[string]any{"timems": t.UnixMilli(), "time": t.Format(time.DateTime), "events": rng.IntN(5000)})
		}
		return marshal(restrict(map[string]any{"events": true, "data": data}, q.responseData))
	}
	v, err := decodeSample("summarystatistics-apiguide6-cleaned.json")
	if err != nil {
		return nil, err
	}
	m := v.(map[string]any)
	bw := make([]any, 0, 28)
	for i := 27; i >= 0; i-- {
		t := day.Add(-time.Duration(i)*24*time.Hour + 11*time.Hour + 40*time.Minute)
		if t.After(now) {
			t = t.Add(-24 * time.Hour)
		}
		bw = append(bw, map[string]any{"timems": t.UnixMilli(), "time": t.Format(time.DateTime), "kb": 50_000_000 + rng.IntN(450_000_000)})
	}
	m["bandwidth"] = bw
	m["subnets"] = 10 + int(uint64(h.opts.Seed)%40)
	m["patterns"] = 3_000_000 + rng.IntN(500_000)
	m["antigenaActions"] = rng.IntN(20)
	return marshal(restrict(m, q.responseData))
}

// restrict keeps only the listed top-level keys (responsedata); an empty list keeps all.
func restrict(m map[string]any, keys []string) map[string]any {
	if len(keys) == 0 {
		return m
	}
	out := make(map[string]any, len(keys))
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// seededUUID derives a stable UUID-formatted string.
func seededUUID(seed, n uint64) string {
	rng := rand.New(rand.NewPCG(seed, mix(0x75756964, n)))
	var u [16]byte
	for i := range u {
		u[i] = byte(rng.Uint32())
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return uuidString(u)
}
