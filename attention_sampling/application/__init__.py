"""The application around the method: what reads files, keeps run folders, draws pictures and scales out.

    data         image folders ROOT/<class>/<images>: scanning, checking, splits, batches
    decode       one image file to 8-bit RGB, its size checked before decoding
    augmentation flips, zoom and contrast of one image, and the bilinear resize
    augmented    the same augmentation composed into the attention view and the patches
    tissue       the cells of an attention view that hold tissue (--tissue auto)
    synthetic    generated images whose label lives in a few small textured spots
    embedded     the embedded data set built from them (generated once into the user's cache)
    settings     the training settings and defaults that train.py and the experiments share
    trainer      Trainer: epochs of train_step, evaluation, the validation-best model, resume
    runfolder    RunFolder: a run's files, written atomically, and its lock
    checkpoint   checkpoint .npz files: model, Adam state, random state, history (no pickle)
    runlock      one training process per run folder
    errors       AttentionSamplingError: the one-line errors the command lines print
    cli          what the command lines share: argument types, the one-line parser, the training flags
    evaluation   predictions over a data set, accuracy, confusion matrix
    prediction   new images, one at a time: load a run, predict a path (predict.py)
    cluster      the same on a Dask cluster (needs dask.distributed)
    figures      curves.png and the attention pictures

The experiments on top of it (the paper's table, the estimator comparison, gradient statistics, the baselines)
live outside the package, in experiments/ of the checkout.
"""
