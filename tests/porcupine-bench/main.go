// Times Porcupine (github.com/anishathalye/porcupine) on Jepsen single-register logs,
// the other half of tests/checker-vs-porcupine.sh: one line per file, in the format of
// `detcd-sim bench-check` (path, operations, verdict, microseconds, best of -repeat
// rounds, parsing not included), so the two checkers are compared on the same files.
//
// The register model and the reading of the log follow Porcupine's own etcd tests
// (porcupine_test.go): a read or cas that timed out, or an op whose process crashed
// (`:info`, or never completed), has an unknown outcome; an unknown cas is linearized
// like a cas whose answer is not checked. A `:fail` write never happened and is left
// out. Written for detcd; it imports Porcupine, it copies none of it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

const (
	opRead = iota
	opWrite
	opCas
)

// registerNil is the register's state before the first write.
const registerNil = -1 << 31

type registerInput struct {
	op       int
	from, to int // write: to; cas: from, to
}

type registerOutput struct {
	ok      bool // cas held
	exists  bool // read found a value
	value   int
	unknown bool
}

var registerModel = porcupine.Model{
	Init: func() interface{} { return registerNil },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		current := state.(int)
		in := input.(registerInput)
		out := output.(registerOutput)
		switch in.op {
		case opRead:
			if out.unknown {
				return true, current
			}
			if out.exists {
				return current == out.value, current
			}
			return current == registerNil, current
		case opWrite:
			return true, in.to
		default:
			held := current == in.from
			next := current
			if held {
				next = in.to
			}
			return out.unknown || held == out.ok, next
		}
	},
}

// parseLog reads a Jepsen register log into Porcupine events.
func parseLog(path string) ([]porcupine.Event, int, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer file.Close()
	type open struct {
		id int
		op int
	}
	var events []porcupine.Event
	dropped := map[int]bool{} // ids of failed writes
	opened := map[int]open{}  // process -> its open op
	var crashed []int         // ids of ops whose outcome is unknown, in log order
	id := 0
	scanner := bufio.NewScanner(file)
	lineNumber := 0
	for scanner.Scan() {
		lineNumber++
		line := scanner.Text()
		at := strings.Index(line, "jepsen.util - ")
		if at < 0 {
			continue
		}
		fields := strings.Split(line[at+len("jepsen.util - "):], "\t")
		if len(fields) != 4 {
			return nil, 0, fmt.Errorf("%s:%d: expected 4 tab-separated fields", path, lineNumber)
		}
		process, err := strconv.Atoi(strings.TrimSpace(fields[0]))
		if err != nil {
			return nil, 0, fmt.Errorf("%s:%d: bad process", path, lineNumber)
		}
		event, function, value := fields[1], fields[2], strings.TrimSpace(fields[3])
		if event == ":invoke" {
			if _, busy := opened[process]; busy {
				return nil, 0, fmt.Errorf("%s:%d: process %d invokes while its previous op is open", path, lineNumber, process)
			}
			in := registerInput{}
			switch function {
			case ":read":
				in.op = opRead
			case ":write":
				in.op = opWrite
				if in.to, err = strconv.Atoi(value); err != nil {
					return nil, 0, fmt.Errorf("%s:%d: bad write value", path, lineNumber)
				}
			case ":cas":
				in.op = opCas
				parts := strings.Fields(strings.Trim(value, "[]"))
				if len(parts) != 2 {
					return nil, 0, fmt.Errorf("%s:%d: bad cas value", path, lineNumber)
				}
				in.from, _ = strconv.Atoi(parts[0])
				in.to, _ = strconv.Atoi(parts[1])
			default:
				return nil, 0, fmt.Errorf("%s:%d: unknown function %s", path, lineNumber, function)
			}
			opened[process] = open{id, in.op}
			events = append(events, porcupine.Event{ClientId: process, Kind: porcupine.CallEvent, Value: in, Id: id})
			id++
			continue
		}
		o, ok := opened[process]
		if !ok {
			return nil, 0, fmt.Errorf("%s:%d: process %d completes an op it never invoked", path, lineNumber, process)
		}
		delete(opened, process)
		if event == ":info" {
			crashed = append(crashed, o.id) // unknown outcome: returns at the end of the history
			continue
		}
		out := registerOutput{}
		switch {
		case event == ":ok" && o.op == opRead:
			if value != "nil" {
				out.exists = true
				if out.value, err = strconv.Atoi(value); err != nil {
					return nil, 0, fmt.Errorf("%s:%d: bad read value", path, lineNumber)
				}
			}
		case event == ":ok":
			out.ok = true
		case event == ":fail" && o.op == opCas:
			out.ok = false
		case event == ":fail" && o.op == opRead:
			out.unknown = true
		case event == ":fail":
			dropped[o.id] = true
			continue
		default:
			return nil, 0, fmt.Errorf("%s:%d: unknown event %s", path, lineNumber, event)
		}
		events = append(events, porcupine.Event{ClientId: process, Kind: porcupine.ReturnEvent, Value: out, Id: o.id})
	}
	if err := scanner.Err(); err != nil {
		return nil, 0, err
	}
	// Ops still open never completed: unknown too, after the crashed ones, in process
	// order, so the history is the same on every run.
	var stillOpen []int
	for process := range opened {
		stillOpen = append(stillOpen, process)
	}
	sort.Ints(stillOpen)
	for _, process := range stillOpen {
		crashed = append(crashed, opened[process].id)
	}
	for _, id := range crashed {
		events = append(events, porcupine.Event{Kind: porcupine.ReturnEvent, Value: registerOutput{unknown: true}, Id: id})
	}
	kept := events[:0]
	for _, e := range events {
		if !dropped[e.Id] {
			kept = append(kept, e)
		}
	}
	return kept, id - len(dropped), nil
}

func main() {
	repeat := flag.Int("repeat", 5, "rounds per file; the best is reported")
	timeout := flag.Duration("timeout", 10*time.Second, "give up on a file after this long (verdict unknown); 0: never")
	flag.Parse()
	if *repeat < 1 {
		fmt.Fprintln(os.Stderr, "porcupine-bench: -repeat must be at least 1")
		os.Exit(2)
	}
	for _, path := range flag.Args() {
		events, ops, err := parseLog(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "porcupine-bench:", err)
			os.Exit(2)
		}
		best := time.Duration(1<<63 - 1)
		verdict := "ok"
		for round := 0; round < *repeat; round++ {
			started := time.Now()
			result := porcupine.CheckEventsTimeout(registerModel, events, *timeout)
			if elapsed := time.Since(started); elapsed < best {
				best = elapsed
			}
			switch result {
			case porcupine.Illegal:
				verdict = "violation"
			case porcupine.Unknown:
				verdict = "unknown"
			}
			if result == porcupine.Unknown {
				break // timed out: another round would too
			}
		}
		fmt.Printf("%s\t%d\t%s\t%d\n", path, ops, verdict, best.Microseconds())
	}
}
