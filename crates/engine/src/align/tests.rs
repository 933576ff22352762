use super::*;
use crate::spe::normalise;

/// A synthetic "anatomy": an off-centre ellipse with a bar, so rotation and scale are visible.
fn anatomy(cy: f32, cx: f32, ry: f32, rx: f32) -> Gray {
    Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        let (dy, dx) = ((y as f32 - cy) / ry, (x as f32 - cx) / rx);
        let mut v = 40.0;
        if dy * dy + dx * dx <= 1.0 {
            v = 200.0;
        }
        if (60..70).contains(&y) && (20..100).contains(&x) {
            v = 120.0;
        }
        v + (x as f32) * 0.2
    })
}

/// The anatomy every pose test moves, normalised as the reverse segmenter sees it.
fn subject() -> Gray {
    normalise(&anatomy(51.0, 57.0, 22.0, 30.0))
}

fn pose_at(degrees: f32, scale: f32) -> Pose {
    Pose { degrees, scale }
}

fn references() -> Vec<Vec<f32>> {
    [
        (50.0, 55.0, 22.0, 30.0),
        (54.0, 60.0, 24.0, 28.0),
        (48.0, 64.0, 20.0, 32.0),
        (52.0, 58.0, 23.0, 29.0),
    ]
    .iter()
    .map(|&(cy, cx, ry, rx)| thumbnail(&normalise(&anatomy(cy, cx, ry, rx))))
    .collect()
}

#[test]
fn an_image_like_the_references_keeps_its_pose() {
    let image = subject();
    assert_eq!(canonical_pose(&image, &references()), Pose::IDENTITY);
}

#[test]
fn a_rotated_copy_is_turned_back() {
    let image = subject();
    let rotated = warp_image(&image, pose_at(12.0, 1.0));
    let pose = canonical_pose(&rotated, &references());
    assert!(pose.degrees <= -6.0, "{pose:?}");
}

#[test]
fn a_zoomed_copy_is_scaled_back() {
    let image = subject();
    let zoomed = warp_image(&image, pose_at(0.0, 1.18));
    let pose = canonical_pose(&zoomed, &references());
    assert!(pose.scale < 0.95, "{pose:?}");
    let shrunk = warp_image(&image, pose_at(0.0, 0.85));
    assert!(canonical_pose(&shrunk, &references()).scale > 1.05);
}

#[test]
fn masks_move_with_their_images() {
    let mask = Array2::from_shape_fn((SIDE, SIDE), |(y, x)| {
        (40..60).contains(&y) && (50..90).contains(&x)
    });
    let pose = pose_at(90.0, 1.0);
    let turned = warp_mask(&mask, pose);
    assert_eq!(
        turned.iter().filter(|&&v| v).count(),
        mask.iter().filter(|&&v| v).count()
    );
    // A 20 x 40 box turned a quarter is 40 x 20.
    let rows = turned
        .rows()
        .into_iter()
        .filter(|r| r.iter().any(|&v| v))
        .count();
    assert_eq!(rows, 40);
    let doubled = warp_mask(&mask, pose_at(0.0, 2.0));
    let ratio = doubled.iter().filter(|&&v| v).count() as f64 / 800.0;
    assert!((ratio - 4.0).abs() < 0.2, "{ratio}");
    assert_eq!(warp_mask(&mask, Pose::IDENTITY), mask);
}

#[test]
fn a_strong_zoom_out_is_scaled_back_by_most_of_its_factor() {
    let image = subject();
    let shrunk = warp_image(&image, pose_at(0.0, 0.78));
    // Undoing 0.78 takes about 1.28; a search that stops at 1.18 leaves a tenth of the zoom in place.
    let pose = canonical_pose(&shrunk, &references());
    assert!(pose.scale > 1.2, "{pose:?}");
}
