// Where training reports go: metrics.jsonl (one JSON object per record), a TensorBoard event
// file, and a live console line.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <ostream>
#include <string>

namespace lathe::train {

/// Writes TensorBoard scalar summaries to <dir>/events.out.tfevents.<time>.<host>.<pid>:
/// TFRecord framing (length, masked CRC-32C, Event protobuf, masked CRC-32C).
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(const std::string& event);
  std::filesystem::path path_;
  std::ofstream out_;
};

/// CRC-32C (Castagnoli) of `n` bytes, as TFRecord uses it (before masking).
uint32_t crc32c(const void* data, std::size_t n);

/// One record: a split ("train", "val") and named values at a step.
struct Record {
  int64_t step = 0;
  std::string split = "train";
  std::map<std::string, double> values;
};

/// The live console line; fields left negative are not shown.
struct ProgressLine {
  int64_t step = 0, max_steps = 0;
  double loss = -1, lr = -1, tokens_per_s = -1, mfu = -1, eta_s = -1;
};

struct MetricsOptions {
  std::filesystem::path out_dir;   // metrics.jsonl and tensorboard/ go here; empty: no files
  bool tensorboard = true;         // write the event file
  std::ostream* console = nullptr; // the progress line; null: none
  /// The console is a terminal: the line is redrawn in place every step. Otherwise a line is
  /// printed only for steps that are logged (no carriage returns in log files).
  bool console_is_tty = false;
  /// Written into every metrics.jsonl record, so two runs of one out_dir never mix.
  std::string run_id;
  /// Records of run_id with a step above this are dropped when the file is opened: a run that
  /// resumes from an earlier checkpoint logs those steps again, once. -1: keep everything.
  int64_t resume_step = -1;
};

class Metrics {
 public:
  explicit Metrics(MetricsOptions options);
  ~Metrics();
  /// Appends to metrics.jsonl (flushed) and the event file (tags "<split>/<name>").
  void record(const Record& record);
  /// Shows the progress line; `logged` marks steps that are also records.
  void progress(const ProgressLine& line, bool logged);
  /// A message on its own line (ends an in-place progress line first).
  void message(const std::string& text);
  std::filesystem::path jsonl_path() const;

 private:
  MetricsOptions o_;
  std::ofstream jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
  bool line_open_ = false;
};

/// The training steps since the last logged one, whose mean loss and throughput a train record
/// reports, and the pace of the whole run (for the progress line's ETA and the report).
class StepWindow {
 public:
  using Clock = std::chrono::steady_clock;
  /// The run's loop starts now, at `start_step`.
  explicit StepWindow(int64_t start_step);

  /// A step's loss (left out of the mean when the step was skipped) and its tokens (all ranks).
  void add(double loss, bool skipped, int64_t tokens);
  /// Tokens per second since the window opened.
  double tokens_per_s() const;
  /// The mean loss of the window's steps; `otherwise` when all were skipped.
  double mean_loss(double otherwise) const;
  /// Seconds left to `max_steps` at the run's pace so far, `step` steps done.
  double eta_s(int64_t step, int64_t max_steps) const;
  /// Opens the next window (after a logged step).
  void reset();

  double run_seconds() const;                    // since the loop started
  int64_t run_tokens() const { return run_tokens_; }  // trained in this run, all ranks

 private:
  Clock::time_point start_, window_start_;
  int64_t start_step_;
  double loss_ = 0;
  int64_t steps_ = 0, tokens_ = 0, run_tokens_ = 0;
};

/// "3m12s", "1h04m", "45s".
std::string format_duration(double seconds);

}  // namespace lathe::train
