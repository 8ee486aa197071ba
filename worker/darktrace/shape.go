package darktrace

import (
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// ShapeFor returns the JSON shape of a service's responses, given a config.Service* name:
//
//   - antigena: a top-level array of actions, or (with includeconnections and on some versions)
//     an object whose "actions" array holds them next to "devices" and "connections";
//   - summarystatistics and status: one object, a snapshot that is one event as a whole;
//   - the others: a top-level array of events.
//
// A null body holds no events wherever an array is expected. Unknown services are assumed to
// answer with a top-level array, like most Darktrace endpoints.
func ShapeFor(service string) jsonscan.Shape {
	switch service {
	case config.ServiceAntigena:
		return jsonscan.ShapeWrapped("actions")
	case config.ServiceSummary, config.ServiceStatus:
		return jsonscan.ShapeObject
	default:
		return jsonscan.ShapeArray
	}
}
