// Command pprofcheck parses a pprof profile (gzipped or not) with google/pprof's profile package,
// validates it with CheckValid, and prints a tab-separated, line-oriented summary for tests:
//
//	valid	true
//	sample_type	<type>	<unit>                (one per type, in order)
//	default_sample_type	<type>
//	period_type	<type>	<unit>
//	period	<n>
//	time_nanos	<n>
//	duration_nanos	<n>
//	drop_frames	<regex>
//	keep_frames	<regex>
//	comment	<text>                            (one per comment)
//	num_samples	<n>
//	num_locations	<n>
//	num_functions	<n>
//	total	<index>	<sum of values[index]>
//	mapping	<id>	<start>	<limit>	<offset>	<file>	<build_id>	<has_functions>	<has_line_numbers>
//	func	<name>	<filename>	<flat,...>	<cum,...>
//	line	<name>	<filename>	<line>	<flat,...>	<cum,...>
//	root	<outermost function>	<sum of values[0]>
//	label	<key>	<value>	<sum of values[0]>
//	numlabel	<key>	<value>	<unit>	<sum of values[0]>
//	sample	<values,...>	<frame leaf>	...	<frame root>
//	lines_fraction	<fraction of locations with a Line whose line > 0>
//	inline_locations	<locations with more than one Line>
//	unsymbolized_locations	<locations with no Line>
//
// Numbers are decimal. Flat attributes a sample to the function/line of the leaf frame
// (Location[0].Line[0]); cum attributes it once to every distinct function/line anywhere in its
// stack, inlined frames included. Frames of a sample line are listed innermost first, expanding
// inlined Lines. Tabs and newlines in names are replaced by spaces. On a parse or validation error
// the command prints "valid<TAB>false" and exits 1 with the error on stderr.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/google/pprof/profile"
)

func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

func joinInts(v []int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ",")
}

func addTo(dst []int64, src []int64) {
	for i := range dst {
		if i < len(src) {
			dst[i] += src[i]
		}
	}
}

type stats struct {
	filename  string
	flat, cum []int64
}

type lineKey struct {
	name, file string
	line       int64
}

func funcName(ln profile.Line) (name, file string) {
	if ln.Function == nil {
		return "", ""
	}
	return clean(ln.Function.Name), clean(ln.Function.Filename)
}

func fail(err error) {
	fmt.Println("valid\tfalse")
	fmt.Fprintln(os.Stderr, "pprofcheck:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: pprofcheck <profile file | ->")
		os.Exit(2)
	}
	var in io.Reader = os.Stdin
	if os.Args[1] != "-" {
		f, err := os.Open(os.Args[1])
		if err != nil {
			fail(err)
		}
		defer f.Close()
		in = f
	}
	p, err := profile.Parse(in)
	if err != nil {
		fail(fmt.Errorf("parse: %v", err))
	}
	if err := p.CheckValid(); err != nil {
		fail(fmt.Errorf("CheckValid: %v", err))
	}

	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	out := func(format string, args ...interface{}) { fmt.Fprintf(w, format+"\n", args...) }

	out("valid\ttrue")
	n := len(p.SampleType)
	for _, st := range p.SampleType {
		out("sample_type\t%s\t%s", clean(st.Type), clean(st.Unit))
	}
	out("default_sample_type\t%s", clean(p.DefaultSampleType))
	if p.PeriodType != nil {
		out("period_type\t%s\t%s", clean(p.PeriodType.Type), clean(p.PeriodType.Unit))
	} else {
		out("period_type\t\t")
	}
	out("period\t%d", p.Period)
	out("time_nanos\t%d", p.TimeNanos)
	out("duration_nanos\t%d", p.DurationNanos)
	out("drop_frames\t%s", clean(p.DropFrames))
	out("keep_frames\t%s", clean(p.KeepFrames))
	for _, c := range p.Comments {
		out("comment\t%s", clean(c))
	}
	out("num_samples\t%d", len(p.Sample))
	out("num_locations\t%d", len(p.Location))
	out("num_functions\t%d", len(p.Function))

	totals := make([]int64, n)
	for _, s := range p.Sample {
		addTo(totals, s.Value)
	}
	for i, t := range totals {
		out("total\t%d\t%d", i, t)
	}
	for _, m := range p.Mapping {
		out("mapping\t%d\t%d\t%d\t%d\t%s\t%s\t%t\t%t", m.ID, m.Start, m.Limit, m.Offset,
			clean(m.File), clean(m.BuildID), m.HasFunctions, m.HasLineNumbers)
	}

	funcs := map[string]*stats{}
	lines := map[lineKey]*stats{}
	roots := map[string]int64{}
	type kv struct{ k, v string }
	labels := map[kv]int64{}
	type nkv struct {
		k    string
		v    int64
		unit string
	}
	numLabels := map[nkv]int64{}
	var sampleLines []string

	getFunc := func(name, file string) *stats {
		st := funcs[name]
		if st == nil {
			st = &stats{filename: file, flat: make([]int64, n), cum: make([]int64, n)}
			funcs[name] = st
		} else if st.filename == "" {
			st.filename = file
		}
		return st
	}
	getLine := func(k lineKey) *stats {
		st := lines[k]
		if st == nil {
			st = &stats{filename: k.file, flat: make([]int64, n), cum: make([]int64, n)}
			lines[k] = st
		}
		return st
	}
	first := func(v []int64) int64 {
		if len(v) == 0 {
			return 0
		}
		return v[0]
	}

	for _, s := range p.Sample {
		if len(s.Location) > 0 && len(s.Location[0].Line) > 0 {
			ln := s.Location[0].Line[0]
			name, file := funcName(ln)
			addTo(getFunc(name, file).flat, s.Value)
			addTo(getLine(lineKey{name, file, ln.Line}).flat, s.Value)
		}
		seenFunc := map[string]bool{}
		seenLine := map[lineKey]bool{}
		frames := []string{}
		root := "(none)"
		for _, loc := range s.Location {
			for _, ln := range loc.Line {
				name, file := funcName(ln)
				frames = append(frames, name)
				root = name
				if !seenFunc[name] {
					seenFunc[name] = true
					addTo(getFunc(name, file).cum, s.Value)
				}
				k := lineKey{name, file, ln.Line}
				if !seenLine[k] {
					seenLine[k] = true
					addTo(getLine(k).cum, s.Value)
				}
			}
		}
		roots[root] += first(s.Value)
		for k, vs := range s.Label {
			for _, v := range vs {
				labels[kv{clean(k), clean(v)}] += first(s.Value)
			}
		}
		for k, vs := range s.NumLabel {
			units := s.NumUnit[k]
			for i, v := range vs {
				u := ""
				if i < len(units) {
					u = units[i]
				}
				numLabels[nkv{clean(k), v, clean(u)}] += first(s.Value)
			}
		}
		sampleLines = append(sampleLines,
			"sample\t"+joinInts(s.Value)+"\t"+strings.Join(frames, "\t"))
	}

	names := make([]string, 0, len(funcs))
	for name := range funcs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		st := funcs[name]
		out("func\t%s\t%s\t%s\t%s", name, st.filename, joinInts(st.flat), joinInts(st.cum))
	}
	lkeys := make([]lineKey, 0, len(lines))
	for k := range lines {
		lkeys = append(lkeys, k)
	}
	sort.Slice(lkeys, func(i, j int) bool {
		a, b := lkeys[i], lkeys[j]
		if a.name != b.name {
			return a.name < b.name
		}
		if a.file != b.file {
			return a.file < b.file
		}
		return a.line < b.line
	})
	for _, k := range lkeys {
		st := lines[k]
		out("line\t%s\t%s\t%d\t%s\t%s", k.name, k.file, k.line, joinInts(st.flat), joinInts(st.cum))
	}
	rootNames := make([]string, 0, len(roots))
	for r := range roots {
		rootNames = append(rootNames, r)
	}
	sort.Strings(rootNames)
	for _, r := range rootNames {
		out("root\t%s\t%d", r, roots[r])
	}
	lkv := make([]kv, 0, len(labels))
	for k := range labels {
		lkv = append(lkv, k)
	}
	sort.Slice(lkv, func(i, j int) bool {
		if lkv[i].k != lkv[j].k {
			return lkv[i].k < lkv[j].k
		}
		return lkv[i].v < lkv[j].v
	})
	for _, k := range lkv {
		out("label\t%s\t%s\t%d", k.k, k.v, labels[k])
	}
	nks := make([]nkv, 0, len(numLabels))
	for k := range numLabels {
		nks = append(nks, k)
	}
	sort.Slice(nks, func(i, j int) bool {
		if nks[i].k != nks[j].k {
			return nks[i].k < nks[j].k
		}
		if nks[i].v != nks[j].v {
			return nks[i].v < nks[j].v
		}
		return nks[i].unit < nks[j].unit
	})
	for _, k := range nks {
		out("numlabel\t%s\t%d\t%s\t%d", k.k, k.v, k.unit, numLabels[k])
	}
	for _, l := range sampleLines {
		out("%s", l)
	}

	withLine, inline, unsym := 0, 0, 0
	for _, loc := range p.Location {
		has := false
		for _, ln := range loc.Line {
			if ln.Line > 0 {
				has = true
			}
		}
		if has {
			withLine++
		}
		if len(loc.Line) > 1 {
			inline++
		}
		if len(loc.Line) == 0 {
			unsym++
		}
	}
	frac := 0.0
	if len(p.Location) > 0 {
		frac = float64(withLine) / float64(len(p.Location))
	}
	out("lines_fraction\t%g", frac)
	out("inline_locations\t%d", inline)
	out("unsymbolized_locations\t%d", unsym)
}
