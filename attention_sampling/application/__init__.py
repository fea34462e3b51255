"""The application around the method: what reads files, keeps run folders and draws pictures.

    data         image folders ROOT/<class>/<images>: scanning, checking, decoding, augmentation, splits
    synthetic    generated images whose label lives in a few small textured spots
    embedded     the embedded data set built from them (generated once into the user's cache)
    trainer      Trainer: epochs of train_step, evaluation, best model, resume (RunFolder keeps the files)
    checkpoint   checkpoint .npz files: model, Adam state, random state, history
    runlock      one training process per run folder
    errors       AttentionSamplingError: the one-line errors the command lines print
    evaluation   predictions over a data set, accuracy, confusion matrix
    figures      curves.png and the attention pictures
    experiments  the paper's table and the estimator comparison (python -m attention_sampling.application.experiments)
    baselines    uniform attention and a CNN on the downscaled image
"""
