// The arm driver's command streamer: a native thread that publishes queued joint commands at
// absolute deadlines on CLOCK_MONOTONIC, without Python (no GIL, no interpreter) in the period.
//
// Python (ceed_vla_ros.nodes.command_streamer, through ctypes) computes the commands a few periods
// ahead and queues them by period index k; the thread wakes at deadline(k) = first_deadline +
// k * period (computed from k, so the rate never drifts), takes slot k if it is queued and
// publishes it with rcl_publish on the node's own rcl publishers (std_msgs/Float64MultiArray: the
// joints, and optionally the gripper on a second publisher). A period whose slot is empty publishes
// nothing (counted in `empty`). A wake-up later than the next deadline skips the periods it passed
// (counted in `missed`); their queued commands are dropped, not sent in a burst.
//
// Re-planning (a new chunk, an e-stop, a reset): ceed_streamer_truncate drops every queued slot
// from `keep` periods after the next unpublished one on and returns the first dropped period's
// index, under the same mutex the thread holds while it takes a slot, so each period publishes
// either the old plan or the new one. The kept periods give the new plan time to be queued: with
// keep 0 the next deadline may come before it, and that period would send nothing.
//
// Error handling: rcl errors are counted (`errors`), their text kept (ceed_streamer_last_error),
// and the thread goes on; the thread stops only on ceed_streamer_stop.

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rcl/error_handling.h>
#include <rcl/publisher.h>
#include <rosidl_runtime_c/primitives_sequence_functions.h>
#include <std_msgs/msg/float64_multi_array.h>

#define STATUS_LENGTH 256
#define ERROR_LENGTH 1100

typedef struct ceed_streamer
{
  const rcl_publisher_t * joints;
  const rcl_publisher_t * gripper;  // NULL: the gripper (if any) is one of the joint values
  std_msgs__msg__Float64MultiArray joint_message;
  std_msgs__msg__Float64MultiArray gripper_message;
  size_t width;  // joint values per command
  size_t capacity;  // queued periods at most
  int64_t period_ns;
  int64_t first_deadline_ns;
  int64_t * slot_index;  // capacity entries: the period index held (-1: empty)
  double * slot_values;  // capacity x (width + 1): joints, then the gripper
  pthread_mutex_t lock;
  pthread_cond_t started_cond;
  pthread_t thread;
  int thread_started;
  int started;
  volatile int stop;
  int realtime_priority;
  int64_t next_index;  // the next period the thread will publish (under lock)
  int64_t published;
  int64_t missed;
  int64_t empty;
  int64_t errors;
  int64_t max_late_ns;
  char status[STATUS_LENGTH];
  char last_error[ERROR_LENGTH];
} ceed_streamer_t;

static int64_t monotonic_ns(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static void sleep_until(int64_t deadline_ns)
{
  struct timespec request;
  request.tv_sec = deadline_ns / 1000000000LL;
  request.tv_nsec = deadline_ns % 1000000000LL;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &request, NULL) == EINTR) {
  }
}

static void set_scheduling(ceed_streamer_t * s)
{
  pthread_setname_np(pthread_self(), "arm-stream");
  if (s->realtime_priority <= 0) {
    snprintf(s->status, STATUS_LENGTH, "normal scheduling (realtime_priority 0)");
    return;
  }
  struct sched_param param;
  memset(&param, 0, sizeof(param));
  param.sched_priority = s->realtime_priority;
  int low = sched_get_priority_min(SCHED_FIFO), high = sched_get_priority_max(SCHED_FIFO);
  if (s->realtime_priority < low || s->realtime_priority > high) {
    snprintf(s->status, STATUS_LENGTH, "normal scheduling: realtime_priority %d is outside SCHED_FIFO's %d..%d",
      s->realtime_priority, low, high);
    return;
  }
  int error = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
  if (error == EPERM) {
    snprintf(s->status, STATUS_LENGTH,
      "normal scheduling: SCHED_FIFO priority %d not permitted (needs CAP_SYS_NICE or an rtprio limit, "
      "e.g. '@realtime - rtprio 90' in /etc/security/limits.conf)", s->realtime_priority);
  } else if (error != 0) {
    snprintf(s->status, STATUS_LENGTH, "normal scheduling: SCHED_FIFO priority %d refused (%s)",
      s->realtime_priority, strerror(error));
  } else {
    snprintf(s->status, STATUS_LENGTH, "SCHED_FIFO priority %d", s->realtime_priority);
  }
}

static void publish(ceed_streamer_t * s, const rcl_publisher_t * publisher, const void * message)
{
  rcl_ret_t ret = rcl_publish(publisher, message, NULL);
  if (ret != RCL_RET_OK) {
    pthread_mutex_lock(&s->lock);
    s->errors++;
    snprintf(s->last_error, ERROR_LENGTH, "rcl_publish: %s", rcl_get_error_string().str);
    pthread_mutex_unlock(&s->lock);
    rcl_reset_error();
  }
}

static void * run(void * argument)
{
  ceed_streamer_t * s = (ceed_streamer_t *)argument;
  set_scheduling(s);
  pthread_mutex_lock(&s->lock);
  s->started = 1;
  pthread_cond_broadcast(&s->started_cond);
  pthread_mutex_unlock(&s->lock);
  double * joints = s->joint_message.data.data;
  double * gripper = s->gripper ? s->gripper_message.data.data : NULL;
  while (!s->stop) {
    pthread_mutex_lock(&s->lock);
    int64_t index = s->next_index;
    pthread_mutex_unlock(&s->lock);
    int64_t deadline = s->first_deadline_ns + index * s->period_ns;
    sleep_until(deadline);
    if (s->stop) {
      break;
    }
    int64_t late = monotonic_ns() - deadline;
    int have = 0;
    pthread_mutex_lock(&s->lock);
    if (late >= s->period_ns) {  // woke after the next deadline(s): skip them, do not burst
      int64_t skipped = late / s->period_ns;
      s->missed += skipped;
      index += skipped;
      late -= skipped * s->period_ns;
    }
    if (late > s->max_late_ns) {
      s->max_late_ns = late;
    }
    size_t slot = (size_t)(index % (int64_t)s->capacity);
    if (s->slot_index[slot] == index) {
      const double * values = s->slot_values + slot * (s->width + 1);
      memcpy(joints, values, s->width * sizeof(double));
      if (gripper) {
        gripper[0] = values[s->width];
      }
      s->slot_index[slot] = -1;
      have = 1;
    }
    s->next_index = index + 1;
    if (!have) {
      s->empty++;
    }
    pthread_mutex_unlock(&s->lock);
    if (have) {
      publish(s, s->joints, &s->joint_message);
      if (gripper) {
        publish(s, s->gripper, &s->gripper_message);
      }
      pthread_mutex_lock(&s->lock);
      s->published++;
      pthread_mutex_unlock(&s->lock);
    }
  }
  return NULL;
}

// A streamer for `joints` (width values per command) and optionally `gripper` (one value; NULL:
// none), `capacity` queued periods, one every `period_ns`. NULL on a bad argument or no memory.
ceed_streamer_t * ceed_streamer_create(
  const rcl_publisher_t * joints, size_t width, const rcl_publisher_t * gripper, int64_t period_ns,
  size_t capacity)
{
  if (joints == NULL || width == 0 || period_ns <= 0 || capacity == 0) {
    return NULL;
  }
  ceed_streamer_t * s = calloc(1, sizeof(ceed_streamer_t));
  if (s == NULL) {
    return NULL;
  }
  s->joints = joints;
  s->gripper = gripper;
  s->width = width;
  s->capacity = capacity;
  s->period_ns = period_ns;
  s->slot_index = malloc(capacity * sizeof(int64_t));
  s->slot_values = calloc(capacity * (width + 1), sizeof(double));
  int ok = s->slot_index && s->slot_values &&
    std_msgs__msg__Float64MultiArray__init(&s->joint_message) &&
    std_msgs__msg__Float64MultiArray__init(&s->gripper_message);
  if (ok) {
    rosidl_runtime_c__double__Sequence__fini(&s->joint_message.data);
    rosidl_runtime_c__double__Sequence__fini(&s->gripper_message.data);
    ok = rosidl_runtime_c__double__Sequence__init(&s->joint_message.data, width) &&
      rosidl_runtime_c__double__Sequence__init(&s->gripper_message.data, 1);
  }
  if (!ok) {
    free(s->slot_index);
    free(s->slot_values);
    free(s);
    return NULL;
  }
  for (size_t i = 0; i < capacity; i++) {
    s->slot_index[i] = -1;
  }
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->started_cond, NULL);
  snprintf(s->status, STATUS_LENGTH, "not started");
  return s;
}

// Start the thread: period 0 is due at `first_deadline_ns` (CLOCK_MONOTONIC). Returns once the
// thread has set its scheduling; 0 on success, else the pthread_create error number.
int ceed_streamer_start(ceed_streamer_t * s, int64_t first_deadline_ns, int realtime_priority)
{
  s->first_deadline_ns = first_deadline_ns;
  s->realtime_priority = realtime_priority;
  int error = pthread_create(&s->thread, NULL, run, s);
  if (error != 0) {
    snprintf(s->status, STATUS_LENGTH, "not started: pthread_create failed (%s)", strerror(error));
    return error;
  }
  s->thread_started = 1;
  pthread_mutex_lock(&s->lock);
  while (!s->started) {
    pthread_cond_wait(&s->started_cond, &s->lock);
  }
  pthread_mutex_unlock(&s->lock);
  return 0;
}

// Queue the command of period `index`: `joints` (width values) and `gripper`. Returns 0, or -1 when
// that period is already published (too late) or beyond the queue (more than capacity ahead).
int ceed_streamer_push(ceed_streamer_t * s, int64_t index, const double * joints, double gripper)
{
  int result = -1;
  pthread_mutex_lock(&s->lock);
  if (index >= s->next_index && index < s->next_index + (int64_t)s->capacity) {
    size_t slot = (size_t)(index % (int64_t)s->capacity);
    double * values = s->slot_values + slot * (s->width + 1);
    memcpy(values, joints, s->width * sizeof(double));
    values[s->width] = gripper;
    s->slot_index[slot] = index;
    result = 0;
  }
  pthread_mutex_unlock(&s->lock);
  return result;
}

// Drop every queued command from period next_index + keep on; return that period's index.
int64_t ceed_streamer_truncate(ceed_streamer_t * s, int64_t keep)
{
  pthread_mutex_lock(&s->lock);
  int64_t first = s->next_index + (keep > 0 ? keep : 0);
  for (size_t i = 0; i < s->capacity; i++) {
    if (s->slot_index[i] >= first) {
      s->slot_index[i] = -1;
    }
  }
  pthread_mutex_unlock(&s->lock);
  return first;
}

// The next period the thread will publish (every earlier one is published, skipped or empty).
int64_t ceed_streamer_next_index(ceed_streamer_t * s)
{
  pthread_mutex_lock(&s->lock);
  int64_t next = s->next_index;
  pthread_mutex_unlock(&s->lock);
  return next;
}

// Counters: published, missed (skipped periods), empty (periods with nothing queued), errors,
// max_late_ns (largest wake-up lateness).
void ceed_streamer_counters(ceed_streamer_t * s, int64_t * counters)
{
  pthread_mutex_lock(&s->lock);
  counters[0] = s->published;
  counters[1] = s->missed;
  counters[2] = s->empty;
  counters[3] = s->errors;
  counters[4] = s->max_late_ns;
  pthread_mutex_unlock(&s->lock);
}

const char * ceed_streamer_status(ceed_streamer_t * s)
{
  return s->status;
}

// The text of the last rcl error (empty if none); copied into `buffer` (`length` bytes).
void ceed_streamer_last_error(ceed_streamer_t * s, char * buffer, size_t length)
{
  pthread_mutex_lock(&s->lock);
  snprintf(buffer, length, "%s", s->last_error);
  pthread_mutex_unlock(&s->lock);
}

// Stop the thread and wait for it (a publish in progress finishes). Safe to call twice.
void ceed_streamer_stop(ceed_streamer_t * s)
{
  s->stop = 1;
  if (s->thread_started) {
    pthread_join(s->thread, NULL);
    s->thread_started = 0;
  }
}

// Stop (if running) and free everything; `s` is invalid afterwards.
void ceed_streamer_destroy(ceed_streamer_t * s)
{
  if (s == NULL) {
    return;
  }
  ceed_streamer_stop(s);
  std_msgs__msg__Float64MultiArray__fini(&s->joint_message);
  std_msgs__msg__Float64MultiArray__fini(&s->gripper_message);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->started_cond);
  free(s->slot_index);
  free(s->slot_values);
  free(s);
}
