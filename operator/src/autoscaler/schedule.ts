// Schedules (spec.autoscaling.schedules): a cron expression in a time zone opens a window of durationMinutes during
// which minReplicas is a floor. Evaluated here, outside the pure policy, which receives only the resulting floor.
import { CronExpressionParser } from 'cron-parser';

export interface Schedule {
  cron: string;
  timezone?: string;
  minReplicas: number;
  durationMinutes: number;
}

export class ScheduleError extends Error {
  constructor(index: number, cron: string, cause: string) {
    super(`spec.autoscaling.schedules[${index}].cron ${JSON.stringify(cron)}: ${cause}`);
    this.name = 'ScheduleError';
  }
}

/** Start of the window of `s` that contains `now`, or undefined when none does. */
export function activeWindowStart(s: Schedule, now: Date, index = 0): Date | undefined {
  let prev: Date;
  try {
    // prev() is strictly before currentDate; one millisecond later makes a window that starts exactly now count.
    const it = CronExpressionParser.parse(s.cron, {
      currentDate: new Date(now.getTime() + 1),
      tz: s.timezone || 'UTC',
    });
    prev = it.prev().toDate();
  } catch (err) {
    throw new ScheduleError(index, s.cron, err instanceof Error ? err.message : String(err));
  }
  return now.getTime() < prev.getTime() + s.durationMinutes * 60_000 ? prev : undefined;
}

/**
 * The highest minReplicas of the schedules active at `now` (0 when none), and the errors of schedules that could not
 * be read (they are skipped, not fatal: one bad entry must not stop the model from scaling).
 */
export function scheduleFloor(
  schedules: Schedule[] | undefined,
  now: Date,
): { floor: number; errors: ScheduleError[] } {
  let floor = 0;
  const errors: ScheduleError[] = [];
  (schedules ?? []).forEach((s, i) => {
    try {
      if (activeWindowStart(s, now, i)) floor = Math.max(floor, s.minReplicas);
    } catch (err) {
      errors.push(err as ScheduleError);
    }
  });
  return { floor, errors };
}
